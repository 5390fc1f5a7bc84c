package portcmd

import (
	"context"
	"slices"
	"strings"
	"testing"

	"github.com/coworkhq/cowork/cmd/cowork/cmdutil"
	"github.com/coworkhq/cowork/cmd/cowork/cmdutil/cmdtest"
	"github.com/coworkhq/cowork/cmd/cowork/iostreams"
)

func parse(t *testing.T, args ...string) (*Options, error) {
	t.Helper()
	ios, _, _, _ := iostreams.Test()
	name := "box"
	var got *Options
	err := cmdtest.Prepare(NewCmdPort(ios, &name, func(o *Options) error { got = o; return nil }), ios, args...).Execute()
	return got, err
}

func TestPortArguments(t *testing.T) {
	for _, tc := range []struct {
		args  []string
		op    string
		guest int
		host  string
		which []string
	}{
		{[]string{"publish", "8000"}, "publish", 8000, "127.0.0.1:8000", nil},
		{[]string{"publish", "3000:0"}, "publish", 3000, "127.0.0.1:0", nil},
		{[]string{"publish", "8080:9090", "--address", "0.0.0.0"}, "publish", 8080, "0.0.0.0:9090", nil},
		{[]string{"publish", "22:2222", "--address", "::1"}, "publish", 22, "[::1]:2222", nil},
		{[]string{"rm", "8000", "127.0.0.1:9090"}, "rm", 0, "", []string{"8000", "127.0.0.1:9090"}},
		{[]string{"ls", "--json"}, "ls", 0, "", nil},
		{[]string{"publish", "5353", "--udp"}, "publish", 5353, "127.0.0.1:5353", nil},
		{[]string{"rm", "5353/udp"}, "rm", 0, "", []string{"5353/udp"}},
		{[]string{"publish", "--auto"}, "auto-on", 0, "", nil},
		{[]string{"rm", "--auto"}, "auto-off", 0, "", nil},
	} {
		got, err := parse(t, tc.args...)
		if err != nil {
			t.Errorf("port %q: %v", tc.args, err)
			continue
		}
		if got.UDP != slices.Contains(tc.args, "--udp") {
			t.Errorf("port %q: UDP %v", tc.args, got.UDP)
		}
		if got.Name != "box" || got.Op != tc.op || got.GuestPort != tc.guest || got.HostAddr != tc.host || strings.Join(got.Which, ",") != strings.Join(tc.which, ",") {
			t.Errorf("port %q: %+v", tc.args, got)
		}
	}
}

func TestPortUsageErrors(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"publish"}, "needs one GUESTPORT"},
		{[]string{"publish", "0"}, "ports 1-65535"},
		{[]string{"publish", "70000"}, "ports 1-65535"},
		{[]string{"publish", "80:x"}, "want GUESTPORT[:HOSTPORT]"},
		{[]string{"publish", "80:-1"}, "want GUESTPORT[:HOSTPORT]"},
		{[]string{"publish", "80", "--address", "localhost"}, "no IP address"},
		{[]string{"rm"}, "needs the PORT"},
		{[]string{"publish", "--auto", "8000"}, "takes no port"},
		{[]string{"publish", "--auto", "--udp"}, "takes no port"},
		{[]string{"publish", "--auto", "--address", "0.0.0.0"}, "takes no port"},
		{[]string{"rm", "--auto", "8000"}, "takes no PORT"},
		{[]string{"ls", "extra"}, ""},
		{[]string{"frob"}, ""},
	} {
		_, err := parse(t, tc.args...)
		if cmdutil.ExitCode(err) != 2 || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("port %q: exit %d, %v; want exit 2 with %q", tc.args, cmdutil.ExitCode(err), err, tc.want)
		}
	}
}

// A stopped instance: each operation says how to start it.
func TestPortOnAStoppedInstance(t *testing.T) {
	t.Setenv("COWORK_HOME", t.TempDir())
	ios, _, _, _ := iostreams.Test()
	if err := Run(context.Background(), &Options{IO: ios, Name: "none", Op: "ls"}); err == nil || !strings.Contains(err.Error(), "cowork init") {
		t.Errorf("no instance: %v", err)
	}
}
