package suggest

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/coworkhq/cowork/hostd/netstack/audit"
	"github.com/coworkhq/cowork/hostd/netstack/policy"
)

var t0 = time.Date(2025, 3, 1, 10, 0, 0, 0, time.UTC)

// at is a time minutes after t0.
func at(minutes int) time.Time { return t0.Add(time.Duration(minutes) * time.Minute) }

func flow(m int, kind, verdict, name, dst, rule string) *audit.Record {
	return &audit.Record{Time: at(m), Start: at(m), Kind: kind, Verdict: verdict, Name: name, NameFrom: audit.FromDNS, Dst: dst, Rule: rule, BytesOut: 10, BytesIn: 100}
}

func query(m int, verdict, name, qtype, rule string) *audit.Record {
	return &audit.Record{Time: at(m), Kind: audit.KindDNS, Verdict: verdict, Name: name, QType: qtype, Rule: rule}
}

// writeLog writes records as hostd does: a chained log, rotated when its
// file passes maxSize (0: never in these tests).
func writeLog(t *testing.T, maxSize int64, recs ...*audit.Record) string {
	t.Helper()
	dir := t.TempDir()
	path := filepath.Join(dir, "network.jsonl")
	l, err := audit.Open(path, audit.Options{MaxSize: maxSize, Keep: 8, Key: filepath.Join(dir, "audit.key"), Head: filepath.Join(dir, "audit.head")})
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
	return path
}

func suggestFrom(t *testing.T, path string, current policy.Policy, o Options) *Suggestion {
	t.Helper()
	c, err := FromLog(context.Background(), path, o)
	if err != nil {
		t.Fatal(err)
	}
	s, err := c.Finish(current)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func findName(s *Suggestion, name string) *Dest {
	for _, d := range s.Names {
		if d.Name == name {
			return d
		}
	}
	return nil
}

func findAddr(s *Suggestion, addr string) *Dest {
	for _, d := range s.Addrs {
		if d.Addr == addr {
			return d
		}
	}
	return nil
}

// A period's allowed and denied queries and flows become destinations
// with their counts, ports and times, each marked against the current
// policy, and the proposal lists exactly what is listed and used, plus
// what is new.
func TestSuggestCountsAndMarks(t *testing.T) {
	path := writeLog(t, 0,
		query(1, audit.Allow, "api.anthropic.com", "A", "allow api.anthropic.com"),
		flow(1, audit.KindTCP, audit.Allow, "api.anthropic.com", "160.79.104.10:443", "allow api.anthropic.com"),
		flow(2, audit.KindConnect, audit.Allow, "api.anthropic.com", "160.79.104.10:443", "allow api.anthropic.com"),
		query(3, audit.Deny, "registry.npmjs.org", "A", "allowlist: registry.npmjs.org is not listed"),
		query(4, audit.Deny, "registry.npmjs.org", "AAAA", "allowlist: registry.npmjs.org is not listed"),
		query(5, audit.Deny, "Registry.NPMJS.org.", "A", "allowlist: registry.npmjs.org is not listed"),
		flow(6, audit.KindUDP, audit.Deny, "", "203.0.113.7:3478", "allowlist: 203.0.113.7 is not listed"),
		flow(7, audit.KindTCP, audit.Deny, "tracker.example.com", "198.51.100.9:443", "deny tracker.example.com"),
		flow(8, audit.KindTCP, audit.Deny, "", "10.1.2.3:22", "private: rfc1918 10.0.0.0/8"),
		flow(9, audit.KindTCP, audit.Deny, "", "169.254.169.254:80", "private: link-local 169.254.0.0/16"),
		flow(10, audit.KindTCP, audit.Deny, "db.corp-example.com", "10.9.9.9:5432", "private: rfc1918 10.0.0.0/8"),
		flow(11, audit.KindTCP, audit.Deny, "", "192.168.127.254:5432", "host port 5432 is not exposed"),
		query(12, audit.Allow, "9.8.7.6.in-addr.arpa", "PTR", "default"),
		query(12, audit.Allow, "host.cowork.internal", "A", "local"),
		&audit.Record{Time: at(13), Kind: audit.KindRelay, Verdict: audit.Allow, Name: "api.anthropic.com"},
	)
	current := policy.Policy{Mode: policy.ModeAllowlist, Allow: []string{"api.anthropic.com", "old.example.org"}, Deny: []string{"tracker.example.com"}}
	s := suggestFrom(t, path, current, Options{})

	if s.Records != 15 || s.Skipped != 0 || !s.First.Equal(at(1)) || !s.Last.Equal(at(13)) {
		t.Errorf("records %d skipped %d first %v last %v", s.Records, s.Skipped, s.First, s.Last)
	}
	if s.Ignored != 3 { // the PTR, the local name, the relay call
		t.Errorf("ignored %d, want 3", s.Ignored)
	}
	api := findName(s, "api.anthropic.com")
	if api == nil || api.Status != StatusListed || api.Entry != "api.anthropic.com" || api.Flows != 2 || api.Queries != 1 || api.Denied != 0 ||
		!slices.Equal(api.Ports, []string{"443"}) || api.BytesIn != 200 || !api.First.Equal(at(1)) || !api.Last.Equal(at(2)) {
		t.Errorf("api.anthropic.com: %+v", api)
	}
	npm := findName(s, "registry.npmjs.org")
	if npm == nil || npm.Status != StatusNew || npm.Entry != "registry.npmjs.org" || npm.Queries != 3 || npm.Denied != 3 || npm.Flows != 0 {
		t.Errorf("registry.npmjs.org (three spellings of one name): %+v", npm)
	}
	if d := findName(s, "tracker.example.com"); d == nil || d.Status != StatusDenied || d.Entry != "tracker.example.com" {
		t.Errorf("tracker.example.com: %+v", d)
	}
	if d := findName(s, "db.corp-example.com"); d == nil || d.Status != StatusPrivate {
		t.Errorf("a name that led only to a private address: %+v", d)
	}
	if d := findAddr(s, "203.0.113.7"); d == nil || d.Status != StatusNew || !slices.Equal(d.Ports, []string{"3478/udp"}) {
		t.Errorf("203.0.113.7: %+v", d)
	}
	for _, a := range []string{"10.1.2.3", "169.254.169.254"} {
		if d := findAddr(s, a); d == nil || d.Status != StatusPrivate || !strings.HasPrefix(d.Why, "private:") {
			t.Errorf("%s: %+v", a, d)
		}
	}
	if len(s.HostPorts) != 1 || s.HostPorts[0] != (HostPort{Port: 5432, Flows: 1, Denied: 1}) {
		t.Errorf("host ports %+v", s.HostPorts)
	}
	if !slices.Equal(s.Unused, []string{"old.example.org"}) {
		t.Errorf("unused %q", s.Unused)
	}
	want := policy.Policy{Mode: policy.ModeAllowlist, Allow: []string{"api.anthropic.com", "old.example.org", "registry.npmjs.org", "203.0.113.7"}, Deny: []string{"tracker.example.com"}}
	if !samePolicy(s.Policy, want) || !slices.Equal(s.Added, []string{"registry.npmjs.org", "203.0.113.7"}) {
		t.Errorf("proposed %+v (added %q), want %+v", s.Policy, s.Added, want)
	}

	pruned := suggestFrom(t, path, current, Options{Prune: true})
	if slices.Contains(pruned.Policy.Allow, "old.example.org") || !slices.Equal(pruned.Removed, []string{"old.example.org"}) {
		t.Errorf("--prune: %+v, removed %q", pruned.Policy, pruned.Removed)
	}
}

func samePolicy(a, b policy.Policy) bool {
	return a.Mode == b.Mode && slices.Equal(a.Allow, b.Allow) && slices.Equal(a.Deny, b.Deny) && slices.Equal(a.HostPorts, b.HostPorts)
}

// Only the period counts: a flow that ended before Since, or began after
// Until, is not in it; one that began before Until and ended after is.
func TestSuggestPeriod(t *testing.T) {
	long := flow(30, audit.KindTCP, audit.Allow, "long.example.com", "198.51.100.1:443", "default")
	long.Start = at(15)
	path := writeLog(t, 0,
		flow(1, audit.KindTCP, audit.Allow, "before.example.com", "198.51.100.1:443", "default"),
		flow(12, audit.KindTCP, audit.Allow, "during.example.com", "198.51.100.1:443", "default"),
		long,
		flow(40, audit.KindTCP, audit.Allow, "after.example.com", "198.51.100.1:443", "default"),
	)
	s := suggestFrom(t, path, policy.Policy{}, Options{Since: at(10), Until: at(20)})
	var got []string
	for _, d := range s.Names {
		got = append(got, d.Name)
	}
	slices.Sort(got)
	if !slices.Equal(got, []string{"during.example.com", "long.example.com"}) || s.Records != 2 {
		t.Errorf("names of the period %q (%d records)", got, s.Records)
	}
}

// The log is read across its rotated files, oldest first.
func TestSuggestReadsRotatedFiles(t *testing.T) {
	var recs []*audit.Record
	for i := range 60 {
		recs = append(recs, flow(i, audit.KindTCP, audit.Allow, fmt.Sprintf("h%d.example.com", i%3), "198.51.100.1:443", "default"))
	}
	path := writeLog(t, 4096, recs...)
	if _, err := os.Stat(path + ".2"); err != nil {
		t.Fatalf("the log did not rotate twice: %v", err)
	}
	s := suggestFrom(t, path, policy.Policy{}, Options{})
	if s.Records != 60 || len(s.Names) != 3 || s.Names[0].Flows != 20 || !s.First.Equal(at(0)) || !s.Last.Equal(at(59)) {
		t.Errorf("%d records, names %+v", s.Records, s.Names)
	}
}

// A throttle's summary line counts for the denials it stands for.
func TestSuggestCountsSuppressedDenials(t *testing.T) {
	r := flow(1, audit.KindTCP, audit.Deny, "noisy.example.com", "198.51.100.1:443", "allowlist: noisy.example.com is not listed")
	r.Suppressed = 500
	s := suggestFrom(t, writeLog(t, 0, r), policy.Policy{Mode: policy.ModeAllowlist}, Options{})
	if d := findName(s, "noisy.example.com"); d == nil || d.Flows != 500 || d.Denied != 500 {
		t.Errorf("%+v", d)
	}
}

// Names under one registrable domain are noted as a group, and proposed
// one by one; with Group the new ones become *.DOMAIN (never over a
// public suffix: each github.io site is its own domain).
func TestSuggestGroups(t *testing.T) {
	path := writeLog(t, 0,
		flow(1, audit.KindTCP, audit.Allow, "github.com", "140.82.121.4:443", "default"),
		flow(2, audit.KindTCP, audit.Allow, "api.github.com", "140.82.121.5:443", "default"),
		flow(3, audit.KindTCP, audit.Allow, "codeload.github.com", "140.82.121.6:443", "default"),
		flow(4, audit.KindTCP, audit.Allow, "alice.github.io", "185.199.108.1:443", "default"),
		flow(5, audit.KindTCP, audit.Allow, "bob.github.io", "185.199.108.2:443", "default"),
		flow(6, audit.KindTCP, audit.Allow, "a.b.example.co.uk", "198.51.100.1:443", "default"),
		flow(7, audit.KindTCP, audit.Allow, "c.example.co.uk", "198.51.100.2:443", "default"),
	)
	exact := suggestFrom(t, path, policy.Policy{}, Options{})
	if len(exact.Groups) != 2 || exact.Groups[0].Domain != "example.co.uk" || exact.Groups[1].Domain != "github.com" ||
		exact.Groups[1].Proposed || !slices.Equal(exact.Groups[1].Names, []string{"api.github.com", "codeload.github.com", "github.com"}) {
		t.Errorf("groups %+v", exact.Groups)
	}
	for _, e := range exact.Policy.Allow {
		if strings.Contains(e, "*") {
			t.Errorf("a wildcard proposed without Group: %q", e)
		}
	}
	grouped := suggestFrom(t, path, policy.Policy{}, Options{Group: true})
	want := []string{"*.example.co.uk", "github.com", "*.github.com", "alice.github.io", "bob.github.io"}
	got := slices.Clone(grouped.Policy.Allow)
	slices.Sort(got)
	slices.Sort(want)
	if !slices.Equal(got, want) {
		t.Errorf("grouped %q, want %q", grouped.Policy.Allow, want)
	}
}

// Only new names make a group: with api.github.com listed, one new name
// under github.com is no group, and is never proposed as *.github.com;
// nor is one new name beside the domain itself. Two new names are.
func TestSuggestGroupsCountOnlyNewNames(t *testing.T) {
	current := policy.Policy{Mode: policy.ModeAllowlist, Allow: []string{"api.github.com"}}
	for _, c := range []struct {
		names []string
		want  []string
	}{
		{[]string{"api.github.com", "x.github.com"}, []string{"api.github.com", "x.github.com"}},
		{[]string{"github.com", "x.github.com"}, []string{"api.github.com", "github.com", "x.github.com"}},
		{[]string{"x.github.com", "y.github.com"}, []string{"*.github.com", "api.github.com"}},
	} {
		var recs []*audit.Record
		for i, name := range c.names {
			recs = append(recs, query(i, audit.Deny, name, "A", "allowlist: "+name+" is not listed"))
		}
		s := suggestFrom(t, writeLog(t, 0, recs...), current, Options{Group: true})
		got := slices.Clone(s.Policy.Allow)
		slices.Sort(got)
		if !slices.Equal(got, c.want) {
			t.Errorf("%q with api.github.com listed: proposed %q, want %q (groups %+v)", c.names, got, c.want, s.Groups)
		}
		if grouped := slices.Contains(got, "*.github.com"); grouped != (len(s.Groups) == 1 && s.Groups[0].Proposed) {
			t.Errorf("%q: groups %+v", c.names, s.Groups)
		}
	}
}

// Top bounds the names and the addresses listed and proposed, the most
// used first, and says how many it left out; the tracked destinations are
// bounded whatever the log holds.
func TestSuggestBounds(t *testing.T) {
	var recs []*audit.Record
	for i := range 30 {
		for range i + 1 {
			recs = append(recs, query(1, audit.Deny, fmt.Sprintf("n%02d.example.com", i), "A", "allowlist"))
		}
	}
	s := suggestFrom(t, writeLog(t, 0, recs...), policy.Policy{Mode: policy.ModeAllowlist}, Options{Top: 5})
	if len(s.Names) != 5 || s.LeftOut != 25 || s.Names[0].Name != "n29.example.com" || len(s.Added) != 5 {
		t.Errorf("%d names (first %+v), %d left out, added %q", len(s.Names), s.Names[0], s.LeftOut, s.Added)
	}

	c := NewCollector(Options{})
	for i := range MaxTracked + 500 {
		c.Add(query(1, audit.Deny, fmt.Sprintf("x%d.example.com", i), "A", "allowlist"))
	}
	for i := range MaxRejected + 50 {
		c.Add(query(1, audit.Deny, fmt.Sprintf("bad name %d", i), "A", "allowlist"))
	}
	s, err := c.Finish(policy.Policy{})
	if err != nil {
		t.Fatal(err)
	}
	if len(c.names) != MaxTracked || s.Untracked != 500 || len(s.Names) != DefaultTop || s.LeftOut != MaxTracked-DefaultTop ||
		len(s.Rejected) != MaxRejected || s.RejectedRecords != MaxRejected+50 {
		t.Errorf("tracked %d, untracked %d, listed %d, left out %d, rejected %d (%d records)", len(c.names), s.Untracked, len(s.Names), s.LeftOut, len(s.Rejected), s.RejectedRecords)
	}
}

// A cut or garbled log does not stop the suggestion: damaged lines are
// skipped and counted, the rest read.
func TestSuggestSkipsDamagedLines(t *testing.T) {
	path := writeLog(t, 0,
		flow(1, audit.KindTCP, audit.Allow, "first.example.com", "198.51.100.1:443", "default"),
		flow(2, audit.KindTCP, audit.Allow, "second.example.com", "198.51.100.1:443", "default"),
	)
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.SplitAfter(string(b), "\n")
	garbled := lines[0] + "not json at all\n" + `{"kind":"tcp","verdict":"maybe"}` + "\n" + "\x00\x01\x02\n" +
		`{"time":"2025-03-01T10:03:00Z","kind":"tcp","verdict":"allow","name":"cut.example.com","dst":"198.51` + "\n" +
		strings.Repeat("x", 2<<20) + "\n" + lines[1]
	if err := os.WriteFile(path, []byte(garbled), 0o600); err != nil {
		t.Fatal(err)
	}
	s := suggestFrom(t, path, policy.Policy{}, Options{})
	if findName(s, "first.example.com") == nil || findName(s, "cut.example.com") != nil || s.Skipped < 4 {
		t.Errorf("skipped %d, names %+v", s.Skipped, s.Names)
	}
}
