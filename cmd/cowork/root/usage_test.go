package root

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"

	"github.com/coworkhq/cowork/cmd/cowork/cmdutil"
	"github.com/coworkhq/cowork/cmd/cowork/iostreams"
)

// An impossible value is a usage error: exit 2, one line naming the flag
// and what it wants, then the pointer to --help.
func TestImpossibleValuesAreUsageErrors(t *testing.T) {
	t.Setenv("COWORK_HOME", t.TempDir())
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"proxy", "--since", "-5m"}, "cowork: --since -5m0s: want how long ago to start, like 5m or 1h (0: all of the log)\n"},
		{[]string{"init", "--timeout", "-1m", "--image", "/no/such/image"}, "--timeout -1m0s: want a positive duration, e.g. 30m"},
		{[]string{"init", "--arch", "sparc"}, `guest architecture "sparc": want arm64 or amd64`},
	} {
		r := cowork(t, "", c.args...)
		if r.code != 2 || !strings.Contains(r.errOut, c.want) || !strings.HasSuffix(r.errOut, "Run 'cowork --help' for usage.\n") {
			t.Errorf("cowork %q: %+v; want exit 2 saying %q", c.args, r, c.want)
		}
	}
}

// status --json for an instance that does not exist still prints JSON,
// which a script can read, and fails.
func TestStatusJSONOfAMissingInstance(t *testing.T) {
	t.Setenv("COWORK_HOME", t.TempDir())
	r := cowork(t, "", "--name", "nope", "status", "--json")
	var got struct{ Name, State, Error string }
	if err := json.Unmarshal([]byte(r.out), &got); err != nil {
		t.Fatalf("stdout is not JSON (%v): %+v", err, r)
	}
	if r.code != 1 || got.Name != "nope" || got.State != "missing" || !strings.Contains(got.Error, "instance nope does not exist") {
		t.Errorf("status --json of a missing instance: %+v, %+v", got, r)
	}
	if !strings.Contains(r.errOut, "instance nope does not exist; create it with `cowork init --name nope`") {
		t.Errorf("stderr: %q", r.errOut)
	}
}

// A mistyped command is a usage error by its type, which decides the exit
// code, not by the words of its message.
func TestUnknownCommandIsAFlagError(t *testing.T) {
	for _, args := range [][]string{{"frobnicate"}, {"staus", "--json"}, {"--name", "dev", "strat"}, {"policy", "alow", "x"}, {"disk", "frob"}, {"disk", "rezise", "20GiB"}} {
		ios, _, out, _ := iostreams.Test()
		cmd := NewCmdRoot(ios)
		cmd.SetArgs(args)
		err := cmd.Execute()
		var fe *cmdutil.FlagError
		if !errors.As(err, &fe) || cmdutil.ExitCode(err) != 2 || strings.Contains(err.Error(), "\n") {
			t.Errorf("%q: %v (%T), want a one-line FlagError", args, err, err)
		}
		if out.Len() != 0 {
			t.Errorf("%q: help instead of an error: %q", args, out)
		}
	}
	if r := cowork(t, "", "strat"); r.code != 2 || r.errOut != "cowork: unknown command \"strat\" for \"cowork\"; did you mean start?\nRun 'cowork --help' for usage.\n" {
		t.Errorf("strat: %+v", r)
	}
}
