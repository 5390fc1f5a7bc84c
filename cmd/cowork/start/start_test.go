package start

import (
	"strings"
	"testing"
	"time"

	"github.com/coworkhq/cowork/cmd/cowork/cmdutil"
	"github.com/coworkhq/cowork/cmd/cowork/iostreams"
)

// parse runs `cowork start args...` up to its Options.
func parse(t *testing.T, args ...string) (*Options, error) {
	t.Helper()
	ios, _, _, _ := iostreams.Test()
	name := "box"
	var got *Options
	cmd := NewCmdStart(ios, &name, func(o *Options) error { got = o; return nil })
	cmd.SetArgs(args)
	cmd.SilenceErrors, cmd.SilenceUsage = true, true
	return got, cmd.Execute()
}

func TestStartFlags(t *testing.T) {
	o, err := parse(t)
	if err != nil || o.Name != "box" || o.Timeout != 10*time.Minute {
		t.Fatalf("defaults: %+v %v", o, err)
	}
	if o, err := parse(t, "--timeout", "20m"); err != nil || o.Timeout != 20*time.Minute {
		t.Fatalf("--timeout 20m: %+v %v", o, err)
	}
}

// A timeout of nothing would give up on the boot at once, and stop the VM
// it had just started: it is a usage error, said in one line.
func TestStartRefusesATimeoutOfNothing(t *testing.T) {
	for _, d := range []string{"0", "0s", "-5m"} {
		o, err := parse(t, "--timeout", d)
		if o != nil || cmdutil.ExitCode(err) != 2 || !strings.HasPrefix(err.Error(), "--timeout ") || strings.Contains(err.Error(), "\n") {
			t.Errorf("--timeout %s: %+v %v (exit %d), want a one-line usage error", d, o, err, cmdutil.ExitCode(err))
		}
	}
}
