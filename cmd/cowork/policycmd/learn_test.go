package policycmd

import (
	"context"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/coworkhq/cowork/cmd/cowork/cmdutil"
	"github.com/coworkhq/cowork/hostd/controlwire"
	"github.com/coworkhq/cowork/hostd/instance"
	"github.com/coworkhq/cowork/hostd/instance/instancetest"
	"github.com/coworkhq/cowork/hostd/netstack/audit"
	"github.com/coworkhq/cowork/hostd/netstack/policy"
)

func TestLearnFlags(t *testing.T) {
	for _, c := range []struct {
		args []string
		for_ time.Duration
		cmd  []string
	}{
		{[]string{"learn"}, 0, nil},
		{[]string{"learn", "--for", "30m"}, 30 * time.Minute, nil},
		{[]string{"learn", "--", "npm", "ci"}, 0, []string{"npm", "ci"}},
		{[]string{"learn", "--for", "1h", "--group", "make", "test", "--verbose"}, time.Hour, []string{"make", "test", "--verbose"}},
	} {
		o, err := parse(t, c.args...)
		if err != nil || o.Action != "learn" || o.For != c.for_ || !slices.Equal(o.Args, c.cmd) || o.Top != 50 {
			t.Errorf("%q: %+v %v", c.args, o, err)
		}
	}
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"learn", "--for", "-1s"}, "--for -1s: want how long to learn"},
		{[]string{"learn", "--top", "0"}, "--top 0"},
		{[]string{"learn", "--for", "soon"}, `invalid argument "soon"`},
	} {
		o, err := parse(t, c.args...)
		if o != nil || cmdutil.ExitCode(err) != 2 || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%q: %+v %v, want a usage error saying %q", c.args, o, err, c.want)
		}
	}
}

// learnHostd stands in for a hostd that keeps learn mode while the call
// lasts; during it, the guest's traffic (recs) goes into the log.
type learnHostd struct {
	policyHostd
	paths instance.Paths
	recs  []*audit.Record
	ended chan struct{}
}

func (h *learnHostd) Learn(ctx context.Context, req controlwire.LearnRequest, send func(*controlwire.Learning) error) error {
	defer close(h.ended)
	now := time.Now()
	if err := send(&controlwire.Learning{Since: now, Until: now.Add(time.Duration(req.TTLSeconds) * time.Second)}); err != nil {
		return err
	}
	l, err := audit.Open(h.paths.NetworkLog(), h.paths.Audit())
	if err != nil {
		return err
	}
	for _, r := range h.recs {
		r.Time = time.Now()
		l.Write(r)
	}
	l.Close()
	<-ctx.Done() // the client closed the call
	return nil
}

// learn --for learns for that long, ends the mode, and suggests from
// what the guest did then, not before.
func TestLearnSuggestsFromItsOwnTime(t *testing.T) {
	p, _ := instancetest.New(t, instance.Config{Network: instance.Network{Policy: policy.Policy{Mode: policy.ModeAllowlist, Allow: []string{"api.anthropic.com"}}}})
	writeAuditLog(t, p, rec(time.Hour, audit.KindTCP, audit.Allow, "before.example.com", "198.51.100.1:443"))
	h := &learnHostd{paths: p, ended: make(chan struct{}), recs: []*audit.Record{
		{Kind: audit.KindDNS, Verdict: audit.Allow, Learn: true, Name: "registry.npmjs.org", QType: "A", Rule: "learn: registry.npmjs.org is not listed"},
		{Kind: audit.KindTCP, Verdict: audit.Allow, Learn: true, Name: "registry.npmjs.org", Dst: "104.16.0.35:443", Rule: "learn: registry.npmjs.org is not listed"},
		{Kind: audit.KindTCP, Verdict: audit.Allow, Name: "api.anthropic.com", Dst: "160.79.104.10:443", Rule: "allow api.anthropic.com"},
		{Kind: audit.KindTCP, Verdict: audit.Deny, Dst: "169.254.169.254:80", Rule: "private: link-local 169.254.0.0/16"},
	}}
	serveHostd(t, p, h)
	r := policyCmd(t, "learn", "--for", "200ms")
	if r.err != nil {
		t.Fatalf("%+v", r)
	}
	select {
	case <-h.ended:
	case <-time.After(5 * time.Second):
		t.Fatal("learn mode did not end with the command")
	}
	got, err := parsePolicyFile([]byte(r.out))
	if err != nil || !slices.Equal(got.Allow, []string{"api.anthropic.com", "registry.npmjs.org"}) {
		t.Errorf("proposed %+v %v; the output:\n%s", got, err, r.out)
	}
	for _, want := range []string{"registry.npmjs.org  443", "(2 learned)", "2 of them were let through by learn mode only", "169.254.169.254"} {
		if !strings.Contains(r.out, want) {
			t.Errorf("no %q in:\n%s", want, r.out)
		}
	}
	if strings.Contains(r.out, "before.example.com") {
		t.Errorf("a record from before learning was read:\n%s", r.out)
	}
	if !strings.Contains(r.errOut, "learning on sandbox") || !strings.Contains(r.errOut, "policy suggest --since") {
		t.Errorf("stderr %q", r.errOut)
	}
	// The --since it prints is one suggest takes.
	_, after, _ := strings.Cut(r.errOut, "policy suggest --since ")
	since, _, _ := strings.Cut(after, " ")
	if o, err := parse(t, "suggest", "--since", since); err != nil || o.Since.IsZero() {
		t.Errorf("suggest --since %q, as learn printed it: %v", since, err)
	}
}

// Learning needs a running instance, and a hostd that knows the call.
func TestLearnRefusals(t *testing.T) {
	instancetest.New(t, instance.Config{})
	if r := policyCmd(t, "learn", "--for", "1s"); cmdutil.ExitCode(r.err) != 1 || !strings.Contains(r.err.Error(), "not running") || r.out != "" {
		t.Errorf("stopped: %+v", r)
	}
	p, _ := instancetest.New(t, instance.Config{})
	servePolicyHostd(t, p) // no Learn
	if r := policyCmd(t, "learn", "--for", "1s"); cmdutil.ExitCode(r.err) != 1 || !strings.Contains(r.err.Error(), "learn") || r.out != "" {
		t.Errorf("an older hostd: %+v", r)
	}
}
