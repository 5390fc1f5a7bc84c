package policycmd

import (
	"context"
	"encoding/json"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/spf13/cobra"

	"github.com/coworkhq/cowork/cmd/cowork/cmdutil"
	"github.com/coworkhq/cowork/cmd/cowork/cmdutil/cmdtest"
	"github.com/coworkhq/cowork/cmd/cowork/iostreams"
	"github.com/coworkhq/cowork/hostd/controlwire"
	"github.com/coworkhq/cowork/hostd/instance"
	"github.com/coworkhq/cowork/hostd/instance/instancetest"
	"github.com/coworkhq/cowork/hostd/netstack/policy"
	"github.com/coworkhq/cowork/internal/unixsock"
)

// command is `cowork policy` on test streams, with runF (nil: run it).
func command(ios *iostreams.IOStreams, runF func(*Options) error, args ...string) *cobra.Command {
	name := instance.DefaultName
	cmd := NewCmdPolicy(ios, &name, runF)
	cmdtest.Prepare(cmd, ios, args...)
	cmd.SetFlagErrorFunc(func(_ *cobra.Command, err error) error { return &cmdutil.FlagError{Err: err} })
	return cmd
}

// parse runs `cowork policy args...` up to its Options.
func parse(t *testing.T, args ...string) (*Options, error) {
	t.Helper()
	ios, _, _, _ := iostreams.Test()
	var got *Options
	err := command(ios, func(o *Options) error { got = o; return nil }, args...).Execute()
	return got, err
}

type result struct {
	out, errOut string
	err         error
}

// policyCmd runs `cowork policy args...` for real.
func policyCmd(t *testing.T, args ...string) result {
	t.Helper()
	ios, _, out, errOut := iostreams.Test()
	err := command(ios, nil, args...).ExecuteContext(context.Background())
	return result{out.String(), errOut.String(), err}
}

func TestPolicyFlags(t *testing.T) {
	for _, c := range []struct {
		args   []string
		json   bool
		action string
		rest   []string
	}{
		{nil, false, "", nil},
		{[]string{"--json"}, true, "", nil},
		{[]string{"mode", "allowlist"}, false, "mode", []string{"allowlist"}},
		{[]string{"allow", "example.com", "*.github.com"}, false, "allow", []string{"example.com", "*.github.com"}},
		{[]string{"deny", "203.0.113.0/24"}, false, "deny", []string{"203.0.113.0/24"}},
		{[]string{"remove", "example.com"}, false, "remove", []string{"example.com"}},
		{[]string{"expose", "5432", "6379"}, false, "expose", []string{"5432", "6379"}},
		{[]string{"unexpose", "5432"}, false, "unexpose", []string{"5432"}},
		{[]string{"reset"}, false, "reset", nil},
	} {
		o, err := parse(t, c.args...)
		if err != nil || o.Name != instance.DefaultName || o.JSON != c.json || o.Action != c.action || !slices.Equal(o.Args, c.rest) {
			t.Errorf("%q: %+v %v", c.args, o, err)
		}
	}
}

// A wrong command line exits 2 with one line that says what to write.
func TestPolicyUsageErrors(t *testing.T) {
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"allow"}, "cowork policy allow needs at least one entry"},
		{[]string{"expose"}, "cowork policy expose needs at least one entry"},
		{[]string{"mode"}, "cowork policy mode takes default or allowlist"},
		{[]string{"mode", "open"}, "cowork policy mode takes default or allowlist"},
		{[]string{"reset", "now"}, `unknown command "now" for "policy reset"`},
		{[]string{"allowed", "x"}, `unknown command "allowed" for "policy"`},
		{[]string{"--yaml"}, "unknown flag: --yaml"},
	} {
		o, err := parse(t, c.args...)
		if o != nil || cmdutil.ExitCode(err) != 2 || !strings.Contains(err.Error(), c.want) || strings.Contains(err.Error(), "\n") {
			t.Errorf("%q: %+v %v (exit %d), want a one-line usage error saying %q", c.args, o, err, cmdutil.ExitCode(err), c.want)
		}
	}
}

// savedPolicy reads the policy in the instance's config.
func savedPolicy(t *testing.T) policy.Policy {
	t.Helper()
	cfg, err := instance.Load(instance.DefaultName)
	if err != nil {
		t.Fatal(err)
	}
	return cfg.Network.Policy
}

// A stopped instance's policy is changed in its config, each change on
// top of the last, and shown.
func TestPolicyChangesAStoppedInstance(t *testing.T) {
	instancetest.New(t, instance.Config{})
	for _, args := range [][]string{
		{"allow", "example.com", "*.github.com"},
		{"allow", "example.com"}, // already there: not twice
		{"deny", "203.0.113.0/24"},
		{"expose", "5432", "6379"},
		{"unexpose", "6379"},
		{"remove", "*.github.com"},
		{"mode", "allowlist"},
	} {
		if r := policyCmd(t, args...); r.err != nil || !strings.Contains(r.errOut, "saved; sandbox is stopped and starts with it") {
			t.Fatalf("%q: %+v", args, r)
		}
	}
	want := policy.Policy{Mode: "allowlist", Allow: []string{"example.com"}, Deny: []string{"203.0.113.0/24"}, HostPorts: []int{5432}}
	if got := savedPolicy(t); got.Mode != want.Mode || !slices.Equal(got.Allow, want.Allow) || !slices.Equal(got.Deny, want.Deny) || !slices.Equal(got.HostPorts, want.HostPorts) {
		t.Fatalf("saved %+v, want %+v", got, want)
	}

	r := policyCmd(t)
	if r.err != nil || r.out != strings.Join(want.Describe(), "\n")+"\n" {
		t.Errorf("policy shows %+v, want %q", r, want.Describe())
	}
	r = policyCmd(t, "--json")
	var shown policy.Policy
	if r.err != nil || json.Unmarshal([]byte(r.out), &shown) != nil || !slices.Equal(shown.Allow, want.Allow) || shown.Mode != want.Mode {
		t.Errorf("policy --json: %+v", r)
	}

	if r := policyCmd(t, "reset"); r.err != nil {
		t.Fatal(r.err)
	}
	if got := savedPolicy(t); got.Mode != "" || len(got.Allow)+len(got.Deny)+len(got.HostPorts) != 0 {
		t.Errorf("reset left %+v", got)
	}
}

// A change that cannot be made is a usage error, and nothing is saved.
func TestPolicyRefusesBadChanges(t *testing.T) {
	instancetest.New(t, instance.Config{})
	if r := policyCmd(t, "allow", "keep.example"); r.err != nil {
		t.Fatal(r.err)
	}
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"allow", "new.example", "not a name"}, `"not a name" is neither a domain`},
		{[]string{"deny", "*.*.example"}, "is neither a domain"},
		{[]string{"remove", "keep.example", "never.example"}, `"never.example" is on neither list`},
		{[]string{"expose", "80", "70000"}, `port "70000": want 1 to 65535`},
		{[]string{"expose", "http"}, `port "http": want 1 to 65535`},
		{[]string{"unexpose", "22"}, `port "22" is not exposed`},
	} {
		r := policyCmd(t, c.args...)
		if cmdutil.ExitCode(r.err) != 2 || !strings.Contains(r.err.Error(), c.want) || r.out != "" {
			t.Errorf("%q: %+v (exit %d), want a usage error saying %q", c.args, r, cmdutil.ExitCode(r.err), c.want)
		}
	}
	if got := savedPolicy(t); !slices.Equal(got.Allow, []string{"keep.example"}) || len(got.Deny)+len(got.HostPorts) != 0 {
		t.Errorf("a refused change was saved: %+v", got)
	}
}

func TestPolicyOfAMissingInstance(t *testing.T) {
	t.Setenv("COWORK_HOME", t.TempDir())
	for _, args := range [][]string{nil, {"allow", "example.com"}} {
		if r := policyCmd(t, args...); cmdutil.ExitCode(r.err) != 1 || !strings.Contains(r.err.Error(), "instance sandbox does not exist") {
			t.Errorf("%q: %+v", args, r)
		}
	}
}

// policyHostd stands in for a running hostd that applies policies.
type policyHostd struct {
	controlwire.Unimplemented
	mu  sync.Mutex
	got []string // the policies it was sent, as JSON
}

func (h *policyHostd) SetPolicy(_ context.Context, policy json.RawMessage) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.got = append(h.got, string(policy))
	return nil
}

// servePolicyHostd holds the instance at p and answers its control socket.
func servePolicyHostd(t *testing.T, p instance.Paths) *policyHostd {
	t.Helper()
	h := &policyHostd{}
	serveHostd(t, p, h)
	return h
}

// serveHostd holds the instance at p and serves h on its control socket.
func serveHostd(t *testing.T, p instance.Paths, h controlwire.Handler) {
	t.Helper()
	l, err := instance.TryLock(p)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(l.Release)
	ln, err := unixsock.Listen(p.HostdSock())
	if err != nil {
		t.Fatal(err)
	}
	srv := controlwire.NewServer(h)
	go srv.Serve(ln)
	t.Cleanup(srv.Close)
}

// A running instance's policy goes to its hostd, which applies and saves
// it: the CLI does not write the config under it.
func TestPolicyGoesToARunningHostd(t *testing.T) {
	p, _ := instancetest.New(t, instance.Config{})
	h := servePolicyHostd(t, p)
	r := policyCmd(t, "allow", "example.com")
	if r.err != nil || !strings.Contains(r.errOut, "applied to sandbox") || !strings.Contains(r.out, "allow example.com") {
		t.Fatalf("%+v", r)
	}
	h.mu.Lock()
	got := slices.Clone(h.got)
	h.mu.Unlock()
	var sent policy.Policy
	if len(got) != 1 || json.Unmarshal([]byte(got[0]), &sent) != nil || !slices.Equal(sent.Allow, []string{"example.com"}) {
		t.Fatalf("hostd was sent %q", got)
	}
	if saved := savedPolicy(t); len(saved.Allow) != 0 {
		t.Errorf("the CLI wrote the config of a running instance: %+v", saved)
	}
}

// A hostd that refuses the policy fails the command, and the config is
// left alone.
func TestPolicyRefusedByARunningHostd(t *testing.T) {
	p, _ := instancetest.New(t, instance.Config{})
	instancetest.Running(t, p, true) // its SetPolicy is not implemented
	r := policyCmd(t, "deny", "tracker.example")
	if cmdutil.ExitCode(r.err) != 1 || !strings.Contains(r.err.Error(), "apply the policy") || r.out != "" {
		t.Fatalf("%+v", r)
	}
	if saved := savedPolicy(t); len(saved.Deny) != 0 {
		t.Errorf("saved %+v", saved)
	}
}
