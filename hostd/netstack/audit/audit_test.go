package audit

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"
)

func TestWriteRotateAndRead(t *testing.T) {
	path := filepath.Join(t.TempDir(), "network.jsonl")
	l, err := Open(path, testOptions(path, 4096, 3))
	if err != nil {
		t.Fatal(err)
	}
	base := time.Unix(1_800_000_000, 0).UTC()
	for i := range 80 {
		v := Allow
		if i%4 == 0 {
			v = Deny
		}
		if err := l.Write(&Record{Time: base.Add(time.Duration(i) * time.Second), Kind: KindTCP, Verdict: v, Dst: "1.2.3.4:443", BytesOut: 10, BytesIn: int64(i)}); err != nil {
			t.Fatal(err)
		}
	}
	l.Close()
	if st := l.Stats(); st.Flows != 80 || st.Blocked != 20 || st.BytesOut != 800 || st.BytesIn != 3160 {
		t.Fatalf("stats %+v", st)
	}
	for _, p := range []string{path, path + ".1", path + ".2", path + ".3"} {
		if st, err := os.Stat(p); err != nil || st.Size() > 4096 {
			t.Fatalf("%s: %v %v", p, st, err)
		}
	}
	if _, err := os.Stat(path + ".4"); err == nil {
		t.Fatal("kept more files than asked")
	}
	// What survived the rotations reads back in order, and since filters.
	var got []*Record
	skipped, err := Stream(context.Background(), path, base.Add(30*time.Second), false, func(r *Record) error { got = append(got, r); return nil })
	if err != nil || skipped != 0 {
		t.Fatal(err, skipped)
	}
	if len(got) != 50 || got[0].BytesIn != 30 || got[49].BytesIn != 79 {
		t.Fatalf("read back %d records, first %+v", len(got), got[0])
	}
}

func TestFollowAcrossRotationAndDamage(t *testing.T) {
	path := filepath.Join(t.TempDir(), "network.jsonl")
	os.WriteFile(path, []byte("not json\n{\"kind\":\"tcp\",\"verdict\":\"allow\",\"name\":\"old\"}\n"), 0o600)
	l, err := Open(path, testOptions(path, 600, 8))
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	names := make(chan string, 100)
	done := make(chan int)
	go func() {
		skipped, _ := Stream(ctx, path, time.Time{}, true, func(r *Record) error { names <- r.Name; return nil })
		done <- skipped
	}()
	if n := <-names; n != "old" {
		t.Fatalf("first record %q", n)
	}
	for i := range 10 { // several rotations at 600 bytes
		l.Write(&Record{Kind: KindDNS, Verdict: Allow, Name: string(rune('a' + i))})
	}
	for i := range 10 {
		select {
		case n := <-names:
			if n != string(rune('a'+i)) {
				t.Fatalf("record %d is %q", i, n)
			}
		case <-ctx.Done():
			t.Fatalf("followed %d of 10 records", i)
		}
	}
	cancel()
	if skipped := <-done; skipped != 1 {
		t.Fatalf("skipped %d damaged lines, want 1", skipped)
	}
}

func FuzzParseLine(f *testing.F) {
	f.Add([]byte(`{"time":"2026-11-26T20:00:00Z","kind":"tcp","verdict":"deny","dst":"10.0.0.1:22","bytes_out":0}`))
	f.Add([]byte(`{"kind":"dns","verdict":"allow","answers":["1.2.3.4"]}`))
	f.Add([]byte(`{`))
	f.Fuzz(func(t *testing.T, line []byte) {
		r, err := ParseLine(line)
		if err == nil && (r.Kind == "" || (r.Verdict != Allow && r.Verdict != Deny)) {
			t.Fatalf("accepted %+v", r)
		}
	})
}
