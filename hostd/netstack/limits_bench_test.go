package netstack

import (
	"io"
	"log/slog"
	"net"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/coworkhq/cowork/hostd/netstack/audit"
)

// nopConn stands for a flow's connection.
type nopConn struct{ net.Conn }

func (nopConn) Close() error { return nil }

func benchLimiter(b *testing.B) *limiter {
	l := newLimiter(Limits{}, func(*audit.Record) {}, slog.New(slog.NewTextHandler(io.Discard, nil)), nil, 0)
	b.Cleanup(l.close)
	return l
}

// BenchmarkFlowLimits is what the limits add to an allowed TCP flow:
// taking its slots, leaving the pending one, watching it for idleness,
// and giving everything back when it closes.
func BenchmarkFlowLimits(b *testing.B) {
	l := benchLimiter(b)
	b.ReportAllocs()
	for b.Loop() {
		f, _ := l.admit(true)
		f.established()
		c := l.idle.watch(nopConn{}, nopConn{})
		c.Close()
		f.end()
	}
}

// BenchmarkFlowLimitsParallel is the same from every CPU at once: the
// counters and the idle set are shared.
func BenchmarkFlowLimitsParallel(b *testing.B) {
	l := benchLimiter(b)
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			f, _ := l.admit(true)
			f.established()
			c := l.idle.watch(nopConn{}, nopConn{})
			c.Close()
			f.end()
		}
	})
}

// BenchmarkDenialAudit is a denied flow's audit through the throttle
// into a real log: the first of a destination is written, repeats are
// counted. "new" writes a line every time (the throttle's window renews
// for each), "repeat" is the retrying guest.
func BenchmarkDenialAudit(b *testing.B) {
	for _, repeat := range []bool{false, true} {
		name := map[bool]string{false: "new", true: "repeat"}[repeat]
		b.Run(name, func(b *testing.B) {
			dir := b.TempDir()
			al, err := audit.Open(filepath.Join(dir, "network.jsonl"), audit.Options{Key: filepath.Join(dir, "audit.key"), Head: filepath.Join(dir, "audit.head")})
			if err != nil {
				b.Fatal(err)
			}
			defer al.Close()
			n := &Stack{log: slog.New(slog.NewTextHandler(io.Discard, nil)), audit: al}
			window := time.Hour
			if !repeat {
				window = time.Nanosecond
			}
			n.lim = newLimiter(Limits{}, n.record, n.log, nil, window)
			defer n.lim.close()
			i := 0
			for b.Loop() {
				dst := "10.0.0.1:443"
				if !repeat {
					i++
					dst = "10.0.0." + strconv.Itoa(i%250) + ":443"
				}
				n.deny(&audit.Record{Kind: audit.KindTCP, Start: time.Now(), GuestPort: 40000, Dst: dst, Rule: "private: rfc1918 10.0.0.0/8"})
			}
		})
	}
}
