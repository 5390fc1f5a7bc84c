package policycmd

import (
	"context"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/coworkhq/cowork/cmd/cowork/cmdutil"
	"github.com/coworkhq/cowork/cmd/cowork/iostreams"
	"github.com/coworkhq/cowork/hostd/instance"
	"github.com/coworkhq/cowork/hostd/instance/instancetest"
	"github.com/coworkhq/cowork/hostd/netstack/policy"
)

// applyCmd runs `cowork policy apply args...` with stdin, on a terminal
// or not.
func applyCmd(t *testing.T, stdin string, tty bool, args ...string) result {
	t.Helper()
	ios, in, out, errOut := iostreams.Test()
	in.WriteString(stdin)
	ios.SetStdinTTY(tty)
	err := command(ios, nil, append([]string{"apply"}, args...)...).ExecuteContext(context.Background())
	return result{out.String(), errOut.String(), err}
}

func writeFile(t *testing.T, text string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "proposal.txt")
	if err := os.WriteFile(path, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

const proposal = "# a comment\nmode: allowlist\nallow api.anthropic.com\nallow registry.npmjs.org\ndeny tracker.example.com\n"

// apply shows a unified diff, asks on a terminal, and saves on yes.
func TestApplyShowsTheDiffAndAsks(t *testing.T) {
	p, _ := instancetest.New(t, instance.Config{Network: instance.Network{Policy: policy.Policy{Allow: []string{"api.anthropic.com", "old.example.com"}, Deny: []string{"tracker.example.com"}}}})
	file := writeFile(t, proposal)
	wantDiff := "--- sandbox (current)\n+++ " + file + " (proposed)\n@@ -1,4 +1,4 @@\n-mode: default\n+mode: allowlist\n allow api.anthropic.com\n-allow old.example.com\n+allow registry.npmjs.org\n deny tracker.example.com\n"

	r := applyCmd(t, "n\n", true, "--from", file)
	if cmdutil.ExitCode(r.err) != 1 || r.out != wantDiff || !strings.Contains(r.errOut, "Apply this policy to sandbox? [y/N]") || !strings.Contains(r.errOut, "not applied") {
		t.Fatalf("%+v\nwant the diff:\n%s", r, wantDiff)
	}
	if got := savedPolicy(t); got.Mode != "" || !slices.Equal(got.Allow, []string{"api.anthropic.com", "old.example.com"}) {
		t.Fatalf("saved after a no: %+v", got)
	}
	before, _ := os.ReadFile(filepath.Join(p.Dir(), "config.json"))

	r = applyCmd(t, "yes\n", true, "--from", file)
	if r.err != nil || !strings.Contains(r.errOut, "saved; sandbox is stopped and starts with it") {
		t.Fatalf("%+v", r)
	}
	got := savedPolicy(t)
	if got.Mode != policy.ModeAllowlist || !slices.Equal(got.Allow, []string{"api.anthropic.com", "registry.npmjs.org"}) || !slices.Equal(got.Deny, []string{"tracker.example.com"}) {
		t.Fatalf("saved %+v", got)
	}
	after, _ := os.ReadFile(filepath.Join(p.Dir(), "config.json"))
	if len(before) == 0 || string(before) == string(after) {
		t.Fatal("the config file was not found, or not changed")
	}
	if entries, _ := os.ReadDir(p.Dir()); slices.ContainsFunc(entries, func(e os.DirEntry) bool { return strings.Contains(e.Name(), ".tmp") }) {
		t.Errorf("a temporary file was left: %v", entries)
	}

	r = applyCmd(t, "", false, "--from", file)
	if r.err != nil || r.out != "" || !strings.Contains(r.errOut, "already has this policy") {
		t.Errorf("the same policy again: %+v", r)
	}
}

// Without a terminal apply never asks: it needs --yes (a usage error,
// exit 2), and with it reads the policy from stdin too.
func TestApplyOffATerminalNeedsYes(t *testing.T) {
	instancetest.New(t, instance.Config{})
	r := applyCmd(t, proposal, false, "--from", "-")
	if cmdutil.ExitCode(r.err) != 2 || !strings.Contains(r.err.Error(), "pass --yes when stdin is not a terminal") || !strings.Contains(r.out, "+allow registry.npmjs.org") {
		t.Fatalf("%+v", r)
	}
	if got := savedPolicy(t); len(got.Allow) != 0 {
		t.Fatalf("saved without a yes: %+v", got)
	}
	r = applyCmd(t, proposal, false, "--from", "-", "--yes")
	if r.err != nil || !slices.Equal(savedPolicy(t).Allow, []string{"api.anthropic.com", "registry.npmjs.org"}) {
		t.Fatalf("%+v %+v", r, savedPolicy(t))
	}
	// JSON, as policy --json and suggest --json print it.
	for _, js := range []string{`{"mode":"allowlist","allow":["a.example.com"]}`, `{"records":3,"policy":{"mode":"allowlist","allow":["b.example.com"]}}`} {
		r = applyCmd(t, js, false, "--from", "-", "--yes")
		if got := savedPolicy(t); r.err != nil || len(got.Allow) != 1 || !strings.HasSuffix(got.Allow[0], ".example.com") {
			t.Errorf("%s: %+v %+v", js, r, got)
		}
	}
}

// A bad file changes nothing, and says which line is wrong.
func TestApplyRefusesABadPolicy(t *testing.T) {
	p, _ := instancetest.New(t, instance.Config{Network: instance.Network{Policy: policy.Policy{Allow: []string{"keep.example.com"}}}})
	before, err := os.ReadFile(filepath.Join(p.Dir(), "config.json"))
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct{ text, want string }{
		{"mode: allowlist\nallow ok.example.com\nallow *\n", `line 3: "*" is neither`},
		{"mode: allowlist\nallow evil.example.com allow 0.0.0.0/0\n", "line 2:"},
		{"mode: open\n", `mode "open"`},
		{"# only the comments of a suggestion cut short\n# STATUS NAME\n", "no mode: line"},
		{"", "empty"},
		{`{"mode":"allowlist","allow":["*"]}`, `"*" is neither`},
		{`{"mode":"allowlist","allowed":["x.example"]}`, `unknown field "allowed"`},
		{`{"mode":`, "not JSON"},
		{"mode: allowlist\nhost port 0\n", "want host port 1 to 65535"},
		// JSON says its mode too: without one it would open the internet.
		{`{"policy":null}`, `no "mode"`},
		{`{"records":3,"policy":{}}`, `no "mode"`},
		{`{"allow":["x.example"]}`, `no "mode"`},
		// An entry is refused, not trimmed and saved as written.
		{`{"mode":"allowlist","allow":["\r0.0.0.0/0"]}`, "control character"},
		{`{"mode":"allowlist","allow":["example.com\u000b"]}`, "control character"},
		{`{"mode":"allowlist","deny":[" example.com"]}`, "white space"},
	} {
		r := applyCmd(t, c.text, false, "--from", writeFile(t, c.text), "--yes")
		if cmdutil.ExitCode(r.err) != 2 || !strings.Contains(r.err.Error(), c.want) || !strings.Contains(r.err.Error(), "nothing was changed") || r.out != "" {
			t.Errorf("%q: %+v, want a usage error saying %q", c.text, r, c.want)
		}
	}
	if r := applyCmd(t, "", false, "--from", filepath.Join(t.TempDir(), "missing"), "--yes"); cmdutil.ExitCode(r.err) != 2 || !strings.Contains(r.err.Error(), "no such file") {
		t.Errorf("a missing file: %+v", r)
	}
	if r := applyCmd(t, "", false); cmdutil.ExitCode(r.err) != 2 || !strings.Contains(r.err.Error(), "needs --from FILE") {
		t.Errorf("no --from: %+v", r)
	}
	after, _ := os.ReadFile(filepath.Join(p.Dir(), "config.json"))
	if string(before) != string(after) {
		t.Errorf("the config changed:\n%s\n%s", before, after)
	}
}

// The diff's lines go through termsafe: an entry saved before control
// characters were refused cannot act on the terminal, nor hide there.
func TestApplyDiffIsTerminalSafe(t *testing.T) {
	instancetest.New(t, instance.Config{Network: instance.Network{Policy: policy.Policy{Allow: []string{"\x1b]0;pwned\x07a.example.com", "\r0.0.0.0/0"}}}})
	r := applyCmd(t, proposal, false, "--from", "-")
	if strings.ContainsAny(r.out, "\x1b\x07\r") || !strings.Contains(r.out, "-allow ␍0.0.0.0/0") {
		t.Errorf("the diff:\n%q", r.out)
	}
}

// stdinChanging answers the confirmation after changing the saved policy,
// as another command run meanwhile would.
type stdinChanging struct {
	t       *testing.T
	changed bool
}

func (s *stdinChanging) Read(p []byte) (int, error) {
	if !s.changed {
		s.changed = true
		if _, err := instance.UpdateConfig(instance.DefaultName, func(c *instance.Config) error {
			c.Network.Policy.Deny = append(c.Network.Policy.Deny, "meanwhile.example.com")
			return nil
		}); err != nil {
			s.t.Error(err)
		}
	}
	return copy(p, "y\n"), io.EOF
}

// A policy changed while apply asked is not overwritten unseen: apply
// refuses and says to run again.
func TestApplyRefusesWhenThePolicyChangedMeanwhile(t *testing.T) {
	instancetest.New(t, instance.Config{})
	ios, _, out, _ := iostreams.Test()
	ios.In = &stdinChanging{t: t}
	ios.SetStdinTTY(true)
	err := command(ios, nil, "apply", "--from", writeFile(t, proposal)).ExecuteContext(context.Background())
	if err == nil || !strings.Contains(err.Error(), "changed meanwhile") || !strings.Contains(out.String(), "+allow registry.npmjs.org") {
		t.Fatalf("%v; the output:\n%s", err, out)
	}
	if got := savedPolicy(t); got.Mode != "" || len(got.Allow) != 0 || !slices.Equal(got.Deny, []string{"meanwhile.example.com"}) {
		t.Errorf("saved %+v", got)
	}
}

// A running instance's hostd is sent the policy, which it applies and
// saves.
func TestApplyGoesToARunningHostd(t *testing.T) {
	p, _ := instancetest.New(t, instance.Config{})
	h := servePolicyHostd(t, p)
	r := applyCmd(t, proposal, false, "--from", "-", "--yes")
	if r.err != nil || !strings.Contains(r.errOut, "applied to sandbox") {
		t.Fatalf("%+v", r)
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if len(h.got) != 1 || !strings.Contains(h.got[0], "registry.npmjs.org") {
		t.Errorf("hostd was sent %q", h.got)
	}
}

func TestUnifiedDiff(t *testing.T) {
	a := []string{"mode: default", "allow a", "allow b", "allow c", "allow d", "allow e", "allow f", "allow g", "allow h", "allow i", "deny x"}
	b := []string{"mode: allowlist", "allow a", "allow b", "allow c", "allow d", "allow e", "allow f", "allow g", "allow h", "allow i", "allow j", "deny x"}
	want := "--- a\n+++ b\n@@ -1,4 +1,4 @@\n-mode: default\n+mode: allowlist\n allow a\n allow b\n allow c\n@@ -8,4 +8,5 @@\n allow g\n allow h\n allow i\n+allow j\n deny x\n"
	if got := unifiedDiff(a, b, "a", "b", false); got != want {
		t.Errorf("got\n%s\nwant\n%s", got, want)
	}
	if got := unifiedDiff(a, a, "a", "b", false); got != "" {
		t.Errorf("no change: %q", got)
	}
	if got := unifiedDiff(nil, []string{"mode: allowlist"}, "a", "b", false); got != "--- a\n+++ b\n@@ -0,0 +1 @@\n+mode: allowlist\n" {
		t.Errorf("from nothing: %q", got)
	}
}

// What policy --json prints, apply takes back, the default mode
// included: it says its mode even when the config leaves it out.
func TestApplyTakesWhatPolicyJSONPrints(t *testing.T) {
	instancetest.New(t, instance.Config{Network: instance.Network{Policy: policy.Policy{Allow: []string{"a.example.com"}}}})
	shown := policyCmd(t, "--json")
	if shown.err != nil {
		t.Fatal(shown.err)
	}
	r := applyCmd(t, shown.out, false, "--from", "-", "--yes")
	if r.err != nil || !strings.Contains(r.errOut, "already has this policy") {
		t.Errorf("policy --json %q, applied: %+v", shown.out, r)
	}
}
