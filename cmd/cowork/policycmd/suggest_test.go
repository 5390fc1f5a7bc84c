package policycmd

import (
	"encoding/json"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/coworkhq/cowork/cmd/cowork/cmdutil"
	"github.com/coworkhq/cowork/hostd/instance"
	"github.com/coworkhq/cowork/hostd/instance/instancetest"
	"github.com/coworkhq/cowork/hostd/netstack/audit"
	"github.com/coworkhq/cowork/hostd/netstack/policy"
)

func TestSuggestFlags(t *testing.T) {
	before := time.Now()
	o, err := parse(t, "suggest", "--since", "2h", "--until", "30m", "--top", "7", "--group", "--prune", "--json")
	if err != nil {
		t.Fatal(err)
	}
	if o.Action != "suggest" || !o.JSON || o.Top != 7 || !o.Group || !o.Prune ||
		o.Since.Before(before.Add(-2*time.Hour)) || o.Since.After(time.Now().Add(-2*time.Hour)) ||
		o.Until.Before(before.Add(-30*time.Minute)) || o.Until.After(time.Now().Add(-30*time.Minute)) {
		t.Errorf("%+v", o)
	}
	o, err = parse(t, "suggest", "--since", "2025-03-01 09:00", "--until", "2025-03-01T12:00:00Z")
	if err != nil || !o.Since.Equal(time.Date(2025, 3, 1, 9, 0, 0, 0, time.Local)) || !o.Until.Equal(time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC)) {
		t.Errorf("times: %+v %v", o, err)
	}
	// What policy learn prints for --since is taken back.
	since := time.Date(2025, 3, 1, 10, 2, 11, 700_000_000, time.Local)
	o, err = parse(t, "suggest", "--since", since.Format(sinceLayout))
	if err != nil || !o.Since.Equal(since.Truncate(time.Second)) {
		t.Errorf("--since %s, as learn prints it: %+v %v", since.Format(sinceLayout), o, err)
	}
	o, err = parse(t, "suggest")
	if err != nil || !o.Since.IsZero() || !o.Until.IsZero() || o.Top != 50 || o.Group || o.JSON {
		t.Errorf("defaults: %+v %v", o, err)
	}
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"suggest", "--since", "-1h"}, "-1h is negative"},
		{[]string{"suggest", "--since", "yesterday"}, "want how long ago"},
		{[]string{"suggest", "--top", "0"}, "--top 0: want 1 to 10000"},
		{[]string{"suggest", "--since", "2025-03-02", "--until", "2025-03-01"}, "--until is before --since"},
		{[]string{"suggest", "sandbox"}, `unknown command "sandbox"`},
	} {
		o, err := parse(t, c.args...)
		if o != nil || cmdutil.ExitCode(err) != 2 || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%q: %+v %v, want a usage error saying %q", c.args, o, err, c.want)
		}
	}
}

// writeAuditLog writes records into the instance's network log, chained
// as hostd writes them.
func writeAuditLog(t *testing.T, p instance.Paths, recs ...*audit.Record) {
	t.Helper()
	l, err := audit.Open(p.NetworkLog(), p.Audit())
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range recs {
		if err := l.Write(r); err != nil {
			t.Fatal(err)
		}
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
}

func rec(ago time.Duration, kind, verdict, name, dst string) *audit.Record {
	return &audit.Record{Time: time.Now().Add(-ago), Kind: kind, Verdict: verdict, Name: name, Dst: dst, Rule: "test"}
}

// The suggestion is a policy file: its table is comments, hostile names
// appear only quoted in them, and apply reads it back as the proposal.
func TestSuggestPrintsAPolicyFile(t *testing.T) {
	p, _ := instancetest.New(t, instance.Config{Network: instance.Network{Policy: policy.Policy{Allow: []string{"api.anthropic.com"}}}})
	writeAuditLog(t, p,
		rec(3*time.Hour, audit.KindTCP, audit.Allow, "old.example.com", "198.51.100.1:443"),
		rec(time.Minute, audit.KindTCP, audit.Allow, "api.anthropic.com", "160.79.104.10:443"),
		rec(time.Minute, audit.KindDNS, audit.Deny, "registry.npmjs.org", ""),
		rec(time.Minute, audit.KindTCP, audit.Deny, "", "192.168.127.254:5432"),
		rec(time.Minute, audit.KindTCP, audit.Deny, "", "10.0.0.8:22"),
		rec(time.Minute, audit.KindConnect, audit.Deny, "evil.example.com\nallow 0.0.0.0/0\x1b[2J", ""),
		rec(time.Minute, audit.KindConnect, audit.Deny, "*", ""),
	)
	r := policyCmd(t, "suggest", "--since", "1h")
	if r.err != nil {
		t.Fatalf("%+v", r)
	}
	var rules []string
	for _, line := range strings.Split(strings.TrimSuffix(r.out, "\n"), "\n") {
		if !strings.HasPrefix(line, "#") {
			rules = append(rules, line)
		}
		if strings.ContainsAny(line, "\x1b\r") {
			t.Errorf("a control character in the output: %q", line)
		}
	}
	if !slices.Equal(rules, []string{"mode: allowlist", "allow api.anthropic.com", "allow registry.npmjs.org"}) {
		t.Errorf("rules %q; the output:\n%s", rules, r.out)
	}
	for _, want := range []string{
		"# listed  api.anthropic.com", "# new     registry.npmjs.org", "proposed",
		"# private  10.0.0.8", "Host port 5432", "cowork policy expose 5432",
		`"evil.example.com\nallow 0.0.0.0/0\x1b[2J"  holds control characters (1 record)`,
		`"*"  a wildcard`, "sandbox is in default mode",
	} {
		if !strings.Contains(r.out, want) {
			t.Errorf("no %q in the output:\n%s", want, r.out)
		}
	}
	if strings.Contains(r.out, "old.example.com") {
		t.Errorf("a record before --since was read:\n%s", r.out)
	}
	got, err := parsePolicyFile([]byte(r.out))
	if err != nil || !slices.Equal(got.Allow, []string{"api.anthropic.com", "registry.npmjs.org"}) || got.Mode != policy.ModeAllowlist {
		t.Errorf("the output read back as %+v %v", got, err)
	}

	r = policyCmd(t, "suggest", "--json")
	var s struct {
		Records int64         `json:"records"`
		Policy  policy.Policy `json:"policy"`
		Added   []string      `json:"added"`
	}
	if r.err != nil || json.Unmarshal([]byte(r.out), &s) != nil || s.Records != 7 || !slices.Equal(s.Added, []string{"old.example.com", "registry.npmjs.org"}) {
		t.Errorf("--json: %+v %+v", r, s)
	}
	if strings.Contains(r.out, "\x1b") {
		t.Error("--json printed an escape character")
	}
}

// A damaged log is read around its damage, and the user is told to
// verify it.
func TestSuggestReadsADamagedLog(t *testing.T) {
	p, _ := instancetest.New(t, instance.Config{})
	writeAuditLog(t, p, rec(time.Minute, audit.KindTCP, audit.Allow, "a.example.com", "198.51.100.1:443"))
	f, err := os.OpenFile(p.NetworkLog(), os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	f.WriteString("{\"time\":\"garbage\nnot json\n{\"kind\":\"tcp\",\"verdict\":\"allow\",\"name\":\"b.exa")
	f.Close()
	r := policyCmd(t, "suggest")
	if r.err != nil || !strings.Contains(r.out, "allow a.example.com") || !strings.Contains(r.errOut, "skipped 2 damaged lines") ||
		!strings.Contains(r.errOut, "audit verify") || strings.Contains(r.out, "b.exa") {
		t.Errorf("%+v", r)
	}
}

// An instance with no log yet has nothing to suggest, and says so.
func TestSuggestWithoutALog(t *testing.T) {
	instancetest.New(t, instance.Config{})
	r := policyCmd(t, "suggest")
	if r.err != nil || !strings.Contains(r.errOut, "no records") || !strings.Contains(r.out, "mode: allowlist") {
		t.Errorf("%+v", r)
	}
}
