package audit

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"
)

// A guest makes a record as long as it likes (a proxied URL of 1 MiB of
// '&', six bytes each in JSON): the log writes it clipped, so the log
// verifies, and a hostd started again after it (killed before its
// anchor caught up) goes on at the right seq. The 6 MiB line it once
// made was read by verify with its middle dropped (a mac that failed),
// and by Open not at all (the chain started again at seq 1).
func TestALongRecordIsWrittenClipped(t *testing.T) {
	path := filepath.Join(t.TempDir(), "network.jsonl")
	o := testOptions(path, DefaultMaxSize, DefaultKeep)
	l, err := Open(path, o)
	if err != nil {
		t.Fatal(err)
	}
	l.headEvery = time.Hour // killed before the anchor's timer fired
	long := "http://x.example/" + strings.Repeat("&", 1<<20)
	r := &Record{Kind: KindHTTP, Verdict: Deny, Method: "GET", URL: long, Answers: []string{long}}
	for _, r := range []*Record{{Kind: KindDNS, Verdict: Allow, Name: "a.example"}, r} {
		if err := l.Write(r); err != nil {
			t.Fatal(err)
		}
	}
	if r.URL != long || r.Clipped || len(r.Answers[0]) != len(long) {
		t.Fatal("Write changed the caller's record")
	}
	// no Close: as kill -9
	lines := fileLines(t, path)
	if n := len(lines[1]); n > MaxRecord+chainMax {
		t.Fatalf("a line of %d bytes, over %d", n, MaxRecord+chainMax)
	}
	got, err := ParseLine(lines[1])
	if err != nil || !got.Clipped || got.Seq != 2 || got.Kind != KindHTTP || got.Verdict != Deny || got.Method != "GET" ||
		!strings.HasPrefix(got.URL, "http://x.example/&&&") || !strings.HasSuffix(got.URL, "...") || len(got.URL) > clipStart+3 {
		t.Fatalf("%v: %+v", err, got)
	}
	l2, err := Open(path, o)
	if err != nil {
		t.Fatal(err)
	}
	if w := l2.Warnings(); len(w) != 0 {
		t.Fatalf("warnings: %q", w)
	}
	l2.Write(&Record{Kind: KindDNS, Verdict: Allow, Name: "b.example"})
	l2.Close()
	v := verify(t, path, o)
	if !v.OK || v.Records != 3 || v.LastSeq != 3 || v.HeadSeq != 3 {
		t.Fatalf("%+v\n%s", v, problems(v))
	}
}

// Every string of a record is clipped, wherever it is (a list, the run's
// info), whatever new field comes: what a guest feeds cannot make a line
// longer than the bound. The fields are filled by reflection, so a field
// added later is filled too.
func TestClipReachesEveryString(t *testing.T) {
	var r Record
	fill(t, reflect.ValueOf(&r).Elem(), strings.Repeat("<", 200<<10))
	r.Kind, r.Verdict = KindHTTP, Deny
	path := filepath.Join(t.TempDir(), "network.jsonl")
	o := testOptions(path, 0, 0)
	l, err := Open(path, o)
	if err != nil {
		t.Fatal(err)
	}
	if err := l.Write(&r); err != nil {
		t.Fatal(err)
	}
	l.Close()
	b, _ := os.ReadFile(path)
	if len(b) > MaxRecord+chainMax {
		t.Fatalf("a line of %d bytes", len(b))
	}
	got, err := ParseLine(b)
	if err != nil || !got.Clipped || got.Kind != KindHTTP || got.Verdict != Deny || got.URL == "" || got.Run == nil || got.Run.Command == "" {
		t.Fatalf("%v: %+v", err, got)
	}
	wantOK(t, verify(t, path, o))
}

// fill sets every string in v to s, every list to three of them, and
// fails on a field of a kind clipValue leaves alone.
func fill(t *testing.T, v reflect.Value, s string) {
	switch v.Kind() {
	case reflect.String:
		v.SetString(s)
	case reflect.Slice:
		if v.Type().Elem().Kind() != reflect.String {
			t.Fatalf("a list of %s: clipValue may not clip it", v.Type().Elem())
		}
		v.Set(reflect.ValueOf([]string{s, s, s}))
	case reflect.Pointer:
		v.Set(reflect.New(v.Type().Elem()))
		fill(t, v.Elem(), s)
	case reflect.Struct:
		if v.Type() == timeType {
			v.Set(reflect.ValueOf(time.Now()))
			return
		}
		for i := range v.NumField() {
			fill(t, v.Field(i), s)
		}
	case reflect.Bool, reflect.Int, reflect.Int64, reflect.Float64:
	default:
		t.Fatalf("a field of kind %s: clipValue may not clip it", v.Kind())
	}
}

// Files smaller than MaxRecord clip a record to fit one: its line is never
// split across two files.
func TestARecordLongerThanAFileIsClippedToFit(t *testing.T) {
	path := filepath.Join(t.TempDir(), "network.jsonl")
	o := testOptions(path, 1500, 3)
	l, err := Open(path, o)
	if err != nil {
		t.Fatal(err)
	}
	for i := range 12 {
		r := &Record{Kind: KindTCP, Verdict: Allow, Name: "a.example", Dst: "192.0.2.1:443"}
		if i%3 == 1 {
			r.Name = strings.Repeat("n", 5000)
		}
		if err := l.Write(r); err != nil {
			t.Fatal(err)
		}
	}
	l.Close()
	v := verify(t, path, o)
	if !v.OK || v.LastSeq != 12 {
		t.Fatalf("%+v\n%s", v, problems(v))
	}
	for _, name := range v.Files {
		b, _ := os.ReadFile(filepath.Join(filepath.Dir(path), name))
		if len(b) > 1500 || len(b) > 0 && b[len(b)-1] != '\n' {
			t.Fatalf("%s: %d bytes, ending %q", name, len(b), b[max(0, len(b)-10):])
		}
	}
}

// A line longer than any the log writes is reported, not read (it once
// had its middle dropped and was checked as what was left); the chain
// goes on after it. Open reads a long last line right: it parses only
// its end.
func TestAnOverLongLineIsReportedNotRead(t *testing.T) {
	path := filepath.Join(t.TempDir(), "network.jsonl")
	o := testOptions(path, 0, 0)
	writeRecords(t, path, o, 4)
	lines := fileLines(t, path)
	long := append([]byte(`{"kind":"dns","name":"`+strings.Repeat("x", 3<<20)), `"}`+"\n"...)
	writeLines(t, path, append(lines[:2:2], append([][]byte{long}, lines[2:]...)...))
	wantProblems(t, verify(t, path, o), "network.jsonl 3 0 over-long")

	// A last line of 3 MiB that ends as a record does: Open goes on from
	// its seq, as tailLink reads only its end.
	path = filepath.Join(t.TempDir(), "network.jsonl")
	o = testOptions(path, 0, 0)
	l, err := Open(path, o)
	if err != nil {
		t.Fatal(err)
	}
	l.maxRec = 1 << 30 // as a log written before the bound
	l.Write(&Record{Kind: KindDNS, Verdict: Allow, Name: "a.example"})
	l.Write(&Record{Kind: KindDNS, Verdict: Allow, Name: strings.Repeat("n", 3<<20)})
	l.Close()
	os.Remove(o.Head) // the anchor cannot help
	l, err = Open(path, o)
	if err != nil {
		t.Fatal(err)
	}
	if l.seq != 2 {
		t.Fatalf("Open goes on after seq %d, want 2", l.seq)
	}
	l.Write(&Record{Kind: KindDNS, Verdict: Allow, Name: "b.example"})
	l.Close()
	// Not read, the record is missing from the chain.
	wantProblems(t, verify(t, path, o), "network.jsonl 2 0 over-long", "network.jsonl 3 3 missing")
	if b, _ := os.ReadFile(path); !bytes.HasSuffix(b, []byte(`,"seq":3,"mac":"`+string(l.mac[:])+`"}`+"\n")) {
		t.Fatalf("the last record: %q", b[len(b)-200:])
	}
}

// tailLink reads backwards by chunks and keeps only each line's end: it
// finds what splitting the whole file into lines finds, whatever the
// lines' lengths and where the chunks fall.
func TestTailLinkFindsTheLastChainedLine(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "network.jsonl")
	o := testOptions(path, 1<<30, 0)
	writeRecords(t, path, o, 40)
	chained := fileLines(t, path)
	rng := rand.New(rand.NewPCG(1, 2))
	for round := range 60 {
		var b bytes.Buffer
		for range rng.IntN(12) {
			if rng.IntN(3) == 0 {
				b.Write(chained[rng.IntN(len(chained)-1)])
			} else { // an older cowork's line, or a part: some longer than a chunk
				n := []int{0, 1, 100, 64<<10 - 1, 64 << 10, 64<<10 + 1, 200 << 10}[rng.IntN(7)]
				b.WriteString(strings.Repeat("y", n) + "\n")
			}
		}
		if rng.IntN(4) == 0 { // no '\n' at the end
			b.Truncate(max(0, b.Len()-1))
		}
		p := filepath.Join(dir, fmt.Sprint(round))
		os.WriteFile(p, b.Bytes(), 0o600)
		var mac [macHex]byte
		seq, found, err := tailLink(p, &mac)
		// what splitting finds
		var wantSeq int64
		for _, line := range bytes.Split(bytes.TrimSuffix(b.Bytes(), []byte("\n")), []byte("\n")) {
			if l, ok := parseLink(line); ok {
				wantSeq = l.seq
			}
		}
		if err != nil || seq != wantSeq || found != (wantSeq > 0) {
			t.Fatalf("round %d: %d %v %v, want %d", round, seq, found, err, wantSeq)
		}
	}
}
