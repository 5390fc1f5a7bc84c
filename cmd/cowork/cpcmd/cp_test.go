package cpcmd

import (
	"strings"
	"testing"

	"github.com/coworkhq/cowork/cmd/cowork/cmdutil"
	"github.com/coworkhq/cowork/cmd/cowork/cmdutil/cmdtest"
	"github.com/coworkhq/cowork/cmd/cowork/iostreams"
	"github.com/coworkhq/cowork/internal/treecopy"
)

func parse(t *testing.T, target *cmdutil.AgentTarget, stdinTTY bool, args ...string) (*Options, error) {
	t.Helper()
	ios, _, _, _ := iostreams.Test()
	ios.SetStdinTTY(stdinTTY)
	var got *Options
	err := cmdtest.Prepare(NewCmdCp(ios, target, func(o *Options) error { got = o; return nil }), ios, args...).Execute()
	return got, err
}

func TestCpArguments(t *testing.T) {
	for _, tc := range []struct {
		args     []string
		instance string // the instance the copy talks to
		want     Options
	}{
		{[]string{"./src", "sandbox:/workspace/src"}, "sandbox", Options{Src: "./src", Dst: "/workspace/src", GuestDst: true}},
		{[]string{"other:notes.txt", "."}, "other", Options{Src: "notes.txt", Dst: ".", GuestSrc: true}},
		{[]string{":x", "./a:b"}, "dflt", Options{Src: "x", Dst: "./a:b", GuestSrc: true}},
		{[]string{"-u", "root", "-q", "f", ":"}, "dflt", Options{Src: "f", Dst: "", GuestDst: true, User: "root", Quiet: true}},
		{[]string{"-", ":site"}, "dflt", Options{Src: "-", Dst: "site", GuestDst: true}},
		{[]string{":build", "-"}, "dflt", Options{Src: "build", Dst: "-", GuestSrc: true}},     // the test's stdout is no terminal
		{[]string{"./local", ":-"}, "dflt", Options{Src: "./local", Dst: "-", GuestDst: true}}, // a guest file named -
	} {
		target := &cmdutil.AgentTarget{Instance: "dflt"}
		got, err := parse(t, target, false, tc.args...)
		if err != nil {
			t.Errorf("cp %q: %v", tc.args, err)
			continue
		}
		g := [...]any{got.Src, got.Dst, got.GuestSrc, got.GuestDst, got.User, got.Quiet}
		w := [...]any{tc.want.Src, tc.want.Dst, tc.want.GuestSrc, tc.want.GuestDst, tc.want.User, tc.want.Quiet}
		if g != w || target.Instance != tc.instance {
			t.Errorf("cp %q: %+v on %s, want %+v on %s", tc.args, *got, target.Instance, tc.want, tc.instance)
		}
	}
}

// Both sides local, both in guests, a terminal for a stream, an instance
// named beside --agent: usage errors, exit 2, each saying what to write.
func TestCpUsageErrors(t *testing.T) {
	for _, tc := range []struct {
		args     []string
		agent    string
		stdinTTY bool
		want     string
	}{
		{[]string{"a", "b"}, "", false, "write one side as INSTANCE:PATH"},
		{[]string{"x:a", ":b"}, "", false, "write one side as INSTANCE:PATH"},
		{[]string{"-", "-"}, "", false, "write one side"},
		{[]string{"-", ":dir"}, "", true, "stdin is a terminal"},
		{[]string{"", ":dir"}, "", false, "name a local path"},
		{[]string{"other:a", "."}, "unix:///tmp/agent.sock", false, "--agent names an agent"},
		{[]string{"only-one"}, "", false, "needs SRC and DST"},
	} {
		_, err := parse(t, &cmdutil.AgentTarget{Instance: "dflt", Address: tc.agent}, tc.stdinTTY, tc.args...)
		if cmdutil.ExitCode(err) != 2 || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("cp %q: exit %d, %v; want exit 2 with %q", tc.args, cmdutil.ExitCode(err), err, tc.want)
		}
	}
}

func TestSummary(t *testing.T) {
	if got := summary(treecopy.Stats{Files: 3, Dirs: 1, Bytes: 2048}); got != "3 files, 1 folder (2 KiB)" {
		t.Errorf("summary: %q", got)
	}
	if got := summary(treecopy.Stats{}); !strings.HasPrefix(got, "nothing") {
		t.Errorf("empty: %q", got)
	}
}

// A skipped entry's name comes from the guest: it reaches the terminal
// inert.
func TestSkippedNamesPrintInert(t *testing.T) {
	var b strings.Builder
	warnSkipped(&b, treecopy.Stats{Skipped: 2, FirstSkipped: "f/\x1b]0;PWNED\x07\x1b[31mred\nfake line"})
	if got := b.String(); strings.ContainsAny(got[:len(got)-1], "\x1b\x07\n") || !strings.Contains(got, "2 entries") {
		t.Errorf("%q", got)
	}
}
