package stop

import (
	"strings"
	"testing"
	"time"

	"github.com/coworkhq/cowork/cmd/cowork/cmdutil"
	"github.com/coworkhq/cowork/cmd/cowork/iostreams"
)

// parse runs `cowork stop args...` up to its Options.
func parse(t *testing.T, args ...string) (*Options, error) {
	t.Helper()
	ios, _, _, _ := iostreams.Test()
	name := "box"
	var got *Options
	cmd := NewCmdStop(ios, &name, func(o *Options) error { got = o; return nil })
	cmd.SetArgs(args)
	cmd.SilenceErrors, cmd.SilenceUsage = true, true
	return got, cmd.Execute()
}

func TestStopFlags(t *testing.T) {
	for _, c := range []struct {
		args    []string
		force   bool
		timeout time.Duration
	}{
		{nil, false, 30 * time.Second},
		{[]string{"-f"}, true, 30 * time.Second},
		{[]string{"--force", "--timeout", "2m"}, true, 2 * time.Minute},
	} {
		o, err := parse(t, c.args...)
		if err != nil || o.Name != "box" || o.Force != c.force || o.Timeout != c.timeout {
			t.Errorf("%q: %+v %v", c.args, o, err)
		}
	}
	for _, d := range []string{"0", "-1s"} {
		o, err := parse(t, "--timeout", d)
		if o != nil || cmdutil.ExitCode(err) != 2 || !strings.Contains(err.Error(), "--force cuts the power at once") {
			t.Errorf("--timeout %s: %+v %v, want a usage error", d, o, err)
		}
	}
}
