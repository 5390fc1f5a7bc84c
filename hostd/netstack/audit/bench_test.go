package audit

import (
	"context"
	"path/filepath"
	"testing"
	"time"
)

// benchRecord is a typical allowed flow, as the bench's decision row
// writes it.
func benchRecord(start time.Time) *Record {
	return &Record{Kind: KindTCP, Verdict: Allow, Rule: "allow: *.github.com", Name: "codeload.github.com", NameFrom: FromDNS,
		Start: start, Dst: "140.82.112.3:443", GuestPort: 40000, BytesOut: 1234, BytesIn: 56789}
}

// BenchmarkWrite is one record through the chained writer: JSON, HMAC,
// the write to the file.
func BenchmarkWrite(b *testing.B) {
	path := filepath.Join(b.TempDir(), "network.jsonl")
	l, err := Open(path, testOptions(path, 0, 0))
	if err != nil {
		b.Fatal(err)
	}
	defer l.Close()
	start := time.Now()
	for b.Loop() {
		if err := l.Write(benchRecord(start)); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkVerify is the check of a log of 100,000 such records (a
// reported ns/op of 0.1 s is 1 s for a million).
func BenchmarkVerify(b *testing.B) {
	path := filepath.Join(b.TempDir(), "network.jsonl")
	o := testOptions(path, 1<<40, 0)
	l, err := Open(path, o)
	if err != nil {
		b.Fatal(err)
	}
	start := time.Now()
	for range 100_000 {
		l.Write(benchRecord(start))
	}
	l.Close()
	for b.Loop() {
		v, err := Verify(context.Background(), path, o)
		if err != nil || !v.OK || v.Records != 100_000 {
			b.Fatalf("%+v %v", v, err)
		}
	}
}
