//go:build linux

package main

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"github.com/coworkhq/cowork/hostd/instance"
	"github.com/coworkhq/cowork/hostd/netstack/audit"
)

// auditSection measures `cowork audit verify` over n records the real
// writer wrote, in one file (an instance keeps four files of 32 MiB,
// about 400,000 records of this size: one file of n records is the same
// work, and more of it, without rotation's bookkeeping), against two peers over the same file:
// sha256sum (coreutils: reading the bytes and hashing them once, as
// verify does with its HMACs) and wc -l (reading them and finding the
// lines: the floor). The file is in the page cache for all three. It also
// times the writer, chained, per record.
func auditSection(t *table, n, rounds int) error {
	home, err := os.MkdirTemp("", "cowork-bench-audit")
	if err != nil {
		return err
	}
	defer os.RemoveAll(home)
	p := instance.Paths(filepath.Join(home, "bench"))
	if err := os.MkdirAll(p.Dir(), 0o700); err != nil {
		return err
	}
	if err := os.WriteFile(p.Config(), []byte(`{"name":"bench"}`), 0o600); err != nil {
		return err
	}
	o := p.Audit()
	o.MaxSize = 1 << 40
	progress("audit: writing %d records with the chained writer", n)
	l, err := audit.Open(p.NetworkLog(), o)
	if err != nil {
		return err
	}
	start := time.Now()
	for i := range n {
		r := &audit.Record{Kind: audit.KindTCP, Verdict: audit.Allow, Rule: "allow: *.github.com", Name: "codeload.github.com", NameFrom: audit.FromDNS,
			Start: start, DurationMs: 12.5, Dst: "140.82.112.3:443", GuestPort: 40000 + i%20000, BytesOut: 1234, BytesIn: int64(i)}
		if i%3 == 0 {
			r = &audit.Record{Kind: audit.KindDNS, Verdict: audit.Allow, Rule: "default: internet", Name: "pypi.org", QType: "A", RCode: "NOERROR", Answers: []string{"151.101.0.223", "151.101.64.223"}}
		}
		if err := l.Write(r); err != nil {
			l.Close()
			return err
		}
	}
	write := time.Since(start)
	if err := l.Close(); err != nil {
		return err
	}
	st, err := os.Stat(p.NetworkLog())
	if err != nil {
		return err
	}
	cowork, err := filepath.Abs("bin/cowork")
	if err != nil {
		return err
	}
	want := fmt.Sprintf("ok: %d records, seq 1..%d, across 1 file\n", n, n)
	progress("audit: %d rounds of `cowork audit verify`, sha256sum and wc -l over %d MiB, interleaved", rounds, st.Size()>>20)
	s, err := interleave(rounds, []func() (time.Duration, error){
		timed(func() error {
			c := exec.Command(cowork, "--name", "bench", "audit", "verify")
			c.Env = append(os.Environ(), "COWORK_HOME="+home)
			out, err := c.CombinedOutput()
			if err == nil && string(out) != want {
				err = fmt.Errorf("cowork audit verify said %q", strings.TrimSpace(string(out)))
			}
			return err
		}),
		timed(func() error { return exec.Command("sha256sum", p.NetworkLog()).Run() }),
		timed(func() error { return exec.Command("wc", "-l", p.NetworkLog()).Run() }),
	})
	if err != nil {
		return err
	}
	t.section("audit log (page cache warm)")
	name := fmt.Sprintf("`cowork audit verify`, %d records (%d MiB) ÷ sha256sum of the file", n, st.Size()>>20)
	t.add(name, secs(s[0].p50()), secs(s[1].p50()), ratio(s[0].p50(), s[1].p50()), "≤ 2 s", s[0].p50() <= 2*time.Second)
	t.add("  the same ÷ wc -l of the file (reading it: the floor)", secs(s[0].p50()), secs(s[2].p50()), ratio(s[0].p50(), s[2].p50()), "", false)
	t.add("  a chained audit line written, in process (mean)", fmt.Sprintf("%.1f µs", us(write)/float64(n)), "", 0, "", false)
	return nil
}
