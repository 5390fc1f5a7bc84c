package audit

import (
	"fmt"
	"path/filepath"
	"testing"
	"time"
)

type sink struct{ lines []*Record }

func (s *sink) write(r *Record) { c := *r; s.lines = append(s.lines, &c) }

func deny(dst string) *Record {
	return &Record{Kind: KindTCP, Verdict: Deny, Rule: "private: rfc1918 10.0.0.0/8", Dst: dst}
}

func TestThrottleOneLineThenASummary(t *testing.T) {
	var s sink
	th := NewThrottle(s.write, 10*time.Second, 4)
	t0 := time.Unix(1_800_000_000, 0)
	for i := range 1000 {
		th.Deny(deny("10.0.0.1:443"), "k", t0.Add(time.Duration(i)*time.Millisecond))
	}
	if len(s.lines) != 1 || s.lines[0].Suppressed != 0 || s.lines[0].Dst != "10.0.0.1:443" {
		t.Fatalf("within the window: %+v", s.lines)
	}
	th.Flush(t0.Add(9 * time.Second))
	if len(s.lines) != 1 {
		t.Fatal("a summary before the window ended")
	}
	th.Flush(t0.Add(10 * time.Second))
	if len(s.lines) != 2 {
		t.Fatalf("no summary when the window ended: %+v", s.lines)
	}
	sum := s.lines[1]
	if sum.Suppressed != 999 || sum.Dst != "10.0.0.1:443" || sum.Rule != "private: rfc1918 10.0.0.0/8" || sum.Verdict != Deny || !sum.Start.Equal(t0) {
		t.Fatalf("summary %+v", sum)
	}
	// A new window: the next denial is a line of its own again.
	th.Deny(deny("10.0.0.1:443"), "k", t0.Add(11*time.Second))
	if len(s.lines) != 3 || s.lines[2].Suppressed != 0 {
		t.Fatalf("after the window: %+v", s.lines[2:])
	}
	// A window that kept nothing quiet ends without a line.
	th.Flush(t0.Add(30 * time.Second))
	if len(s.lines) != 3 {
		t.Fatalf("an empty summary: %+v", s.lines[3:])
	}
}

// A sweep over many destinations costs a bounded number of lines, and
// the table a bounded number of entries; nothing is lost from the counts.
func TestThrottleBoundsASweep(t *testing.T) {
	var s sink
	const burst = 8
	th := NewThrottle(s.write, 10*time.Second, burst)
	t0 := time.Unix(1_800_000_000, 0)
	attempts := 0
	for round := range 3 {
		for i := range 5000 {
			dst := fmt.Sprintf("10.%d.%d.1:22", i/256, i%256)
			th.Deny(deny(dst), dst, t0.Add(time.Duration(round)*time.Millisecond))
			attempts++
		}
		th.Deny(&Record{Kind: KindUDP, Verdict: Deny, Dst: "10.0.0.1:53"}, "udp", t0)
		attempts++
	}
	if len(th.keys) > burst || len(th.others) > 2 {
		t.Fatalf("the table grew to %d keys and %d kinds", len(th.keys), len(th.others))
	}
	th.Flush(t0.Add(time.Minute))
	if len(th.keys)+len(th.others) != 0 {
		t.Fatal("ended windows stayed in the table")
	}
	// burst lines of their own, a summary for each (they were retried),
	// one for the rest of the TCP denials, one for UDP (the table was full).
	if len(s.lines) > 2*burst+2 {
		t.Fatalf("%d lines for a sweep of 15,000 denials", len(s.lines))
	}
	var counted int64
	for _, r := range s.lines {
		counted += max(r.Suppressed, 1)
	}
	if counted != int64(attempts) {
		t.Fatalf("the lines account for %d denials, want %d", counted, attempts)
	}
}

// The log's stats count what a summary stands for.
func TestSummaryCountsInStats(t *testing.T) {
	path := filepath.Join(t.TempDir(), "network.jsonl")
	l, err := Open(path, testOptions(path, 0, 0))
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	th := NewThrottle(func(r *Record) { l.Write(r) }, 10*time.Second, DefaultThrottleBurst)
	t0 := time.Now()
	for range 50 {
		th.Deny(deny("10.0.0.1:443"), "k", t0)
	}
	th.Flush(t0.Add(time.Hour))
	if st := l.Stats(); st.Flows != 50 || st.Blocked != 50 {
		t.Fatalf("stats %+v: want 50 flows, 50 blocked", st)
	}
}

// Clients of the egress proxy: one that fills the table with denials of
// its own cannot hide another's, which are summed up apart, naming their
// client, as are a client's own repeats.
func TestThrottleKeepsClientsApart(t *testing.T) {
	var s sink
	th := NewThrottle(s.write, 10*time.Second, 4)
	t0 := time.Unix(1_800_000_000, 0)
	from := func(client, dst string) *Record {
		r := deny(dst)
		r.Client = client
		return r
	}
	for i := range 100 { // a sweep fills the table, and then some
		dst := fmt.Sprintf("10.0.0.%d:443", i)
		th.Deny(from("10.244.1.7:40000", dst), dst+" 10.244.1.7", t0)
	}
	th.Deny(from("10.244.2.9:50000", "10.9.9.9:80"), "10.9.9.9:80 10.244.2.9", t0)
	th.Deny(from("10.244.2.9:50001", "10.9.9.8:80"), "10.9.9.8:80 10.244.2.9", t0)
	th.Flush(t0.Add(10 * time.Second))
	sums := map[string]int64{}
	for _, r := range s.lines {
		if r.Rule == RuleThrottled {
			sums[r.Client] += r.Suppressed
		}
	}
	if sums["10.244.1.7:40000"] != 96 || sums["10.244.2.9:50000"] != 2 || len(sums) != 2 {
		t.Errorf("the summaries of denials with no line of their own, by client: %v", sums)
	}
}
