package audit

import (
	"bytes"
	"context"
	"encoding/hex"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/coworkhq/cowork/internal/permtest"
)

// A running instance's log is verified while records are appended and
// files rotate: what verify reads is never taken for tampering.
func TestVerifyWhileWriting(t *testing.T) {
	path := filepath.Join(t.TempDir(), "network.jsonl")
	o := testOptions(path, 4096, 3)
	o.Live = true
	l, err := Open(path, o)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	l.headEvery = time.Millisecond
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			l.Write(&Record{Kind: KindDNS, Verdict: Allow, Name: strings.Repeat("n", i%50) + ".example"})
		}
	}()
	deadline := time.Now().Add(2 * time.Second)
	runs := 0
	for ; time.Now().Before(deadline); runs++ {
		v := verify(t, path, o)
		if !v.OK {
			close(stop)
			wg.Wait()
			t.Fatalf("run %d: %s", runs, problems(v))
		}
	}
	close(stop)
	wg.Wait()
	v := verify(t, path, o)
	t.Logf("%d runs, %d records", runs, v.LastSeq)
	if !v.OK || !v.RotatedAway || v.LastSeq < 1000 {
		t.Fatalf("after %d runs: %+v", runs, v)
	}
}

// A line being written (half of it on disk) is left out, not reported,
// while a writer may be live; with none, it is text added to the log, or
// a crash's, and reported.
func TestAnUnfinishedLastLineIsLeftOut(t *testing.T) {
	path := filepath.Join(t.TempDir(), "network.jsonl")
	o := testOptions(path, 0, 0)
	o.Live = true
	l, err := Open(path, o)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	for range 5 {
		l.Write(&Record{Kind: KindDNS, Verdict: Allow, Name: "a.example"})
	}
	l.flushHead()
	f, _ := os.OpenFile(path, os.O_WRONLY|os.O_APPEND, 0)
	f.WriteString(`{"time":"2027-01-01T00:00:00Z","kind":"dns","verdict":"al`)
	f.Close()
	v := verify(t, path, o)
	if !v.OK || !v.Partial || v.LastSeq != 5 || v.HeadSeq != 5 {
		t.Fatalf("%+v\n%s", v, problems(v))
	}
	o.Live = false
	v = verify(t, path, o)
	wantProblems(t, v, "network.jsonl 6 0 unfinished")
	if v.Partial || v.LastSeq != 5 || !strings.Contains(problems(v), "hostd is not running") {
		t.Fatalf("%+v\n%s", v, problems(v))
	}
}

// Lines cut from the end while hostd was stopped stay visible after it
// starts again: the chain goes on from the anchor, leaving the gap.
func TestReopenAfterACutKeepsTheGap(t *testing.T) {
	path, o := newLog(t, 30)
	lines := fileLines(t, path)
	writeLines(t, path, lines[:len(lines)-3]) // seq 29 and 30
	l, err := Open(path, o)
	if err != nil {
		t.Fatal(err)
	}
	if w := strings.Join(l.Warnings(), "\n"); !strings.Contains(w, "ends at seq 28 but audit.head says 30") {
		t.Fatalf("warnings: %q", w)
	}
	l.Write(&Record{Kind: KindDNS, Verdict: Allow, Name: "after.example"})
	l.Close()
	wantProblems(t, verify(t, path, o), "network.jsonl "+lineCount(t, path)+" 31 missing")
}

// A crash in the middle of a write leaves part of a line: the next start
// drops it, and the chain goes on from the last whole record.
func TestReopenDropsAnUnfinishedLine(t *testing.T) {
	path, o := newLog(t, 10)
	b, _ := os.ReadFile(path)
	const part = `{"time":"2027-01-01T00:00:00Z","kind":"tc`
	os.WriteFile(path, append(b, part...), 0o600)
	l, err := Open(path, o)
	if err != nil {
		t.Fatal(err)
	}
	if w := strings.Join(l.Warnings(), "\n"); !strings.Contains(w, "dropped an unfinished line ("+strconv.Itoa(len(part))+" bytes)") {
		t.Fatalf("warnings: %q", w)
	}
	l.Write(&Record{Kind: KindDNS, Verdict: Allow, Name: "after.example"})
	l.Close()
	if v := verify(t, path, o); !v.OK || v.LastSeq != 11 || v.Partial {
		t.Fatalf("%+v\n%s", v, problems(v))
	}
}

// A write that stopped part way (a full disk) leaves part of a line; the
// next record starts a line of its own and the chain goes on, so verify
// names the part alone.
func TestAWriteCutShortEndsItsLine(t *testing.T) {
	path := filepath.Join(t.TempDir(), "network.jsonl")
	o := testOptions(path, 0, 0)
	l, err := Open(path, o)
	if err != nil {
		t.Fatal(err)
	}
	l.Write(&Record{Kind: KindDNS, Verdict: Allow, Name: "a.example"})
	const part = `{"time":"2027-01-01T00:00:00Z","kind":"d`
	f, _ := os.OpenFile(path, os.O_WRONLY|os.O_APPEND, 0)
	f.WriteString(part)
	f.Close()
	l.cutLen = int64(len(part)) // as Write sets it when rotlog wrote part of the line
	l.Write(&Record{Kind: KindDNS, Verdict: Allow, Name: "b.example"})
	l.Close()
	wantProblems(t, verify(t, path, o), "network.jsonl 2 0 cut-write")
	if v := verify(t, path, o); v.LastSeq != 2 || v.Records != 2 {
		t.Fatalf("%+v", v)
	}
}

// The anchor follows the log within headEvery of a write, without Close.
func TestTheAnchorFollowsTheLog(t *testing.T) {
	path := filepath.Join(t.TempDir(), "network.jsonl")
	o := testOptions(path, 0, 0)
	l, err := Open(path, o)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	l.headEvery = 20 * time.Millisecond
	for range 3 {
		l.Write(&Record{Kind: KindDNS, Verdict: Allow, Name: "a.example"})
	}
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		if hd, err := readHead(o.Head, l.key); err == nil && hd.Seq == 3 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the anchor did not follow the log")
		}
	}
}

// The key and the anchor are the owner's alone; the key is kept across
// restarts and is never in the log.
func TestKeyAndAnchorAreOwnerOnly(t *testing.T) {
	permtest.ClearUmask(t)
	path, o := newLog(t, 3)
	permtest.WantMode(t, o.Key, 0o600)
	permtest.WantMode(t, o.Head, 0o600)
	key, err := readKey(o.Key)
	if err != nil {
		t.Fatal(err)
	}
	writeRecords(t, path, o, 3)
	if again, _ := readKey(o.Key); !bytes.Equal(again, key) {
		t.Fatal("a restart made a new key")
	}
	b, _ := os.ReadFile(path)
	if bytes.Contains(b, []byte(hex.EncodeToString(key))) {
		t.Fatal("the key is in the log")
	}
	if v := verify(t, path, o); !v.OK || v.LastSeq != 6 {
		t.Fatalf("%+v", v)
	}
}

// Two processes making the key at once get the same one.
func TestOneKeyWhenMadeAtOnce(t *testing.T) {
	p := filepath.Join(t.TempDir(), "audit.key")
	keys := make([][]byte, 8)
	var wg sync.WaitGroup
	for i := range keys {
		wg.Go(func() {
			k, err := loadOrMakeKey(p)
			if err != nil {
				t.Error(err)
			}
			keys[i] = k
		})
	}
	wg.Wait()
	for _, k := range keys[1:] {
		if !bytes.Equal(k, keys[0]) || len(k) != keyLen {
			t.Fatalf("keys %x", keys)
		}
	}
}

// A log begun by an older cowork verifies from its first chained line,
// and says how many lines before it are not checked; lines without a mac
// anywhere else are reported.
func TestAnOlderLogVerifiesFromItsFirstChainedLine(t *testing.T) {
	path := filepath.Join(t.TempDir(), "network.jsonl")
	o := testOptions(path, 0, 0)
	old := `{"time":"2026-01-01T00:00:00Z","kind":"tcp","verdict":"allow","bytes_out":1,"bytes_in":2}` + "\n"
	os.WriteFile(path, []byte(old+old), 0o600)
	v := verify(t, path, o) // not started since: no key yet
	if !v.OK || v.Unchained != 2 || v.Records != 0 || !strings.Contains(strings.Join(v.Notes, "\n"), "none of its 2 lines is chained") {
		t.Fatalf("%+v", v)
	}
	writeRecords(t, path, o, 4)
	v = verify(t, path, o)
	if !v.OK || v.Unchained != 2 || v.FirstSeq != 1 || v.Records != 4 || !strings.Contains(strings.Join(v.Notes, "\n"), "2 lines before seq 1 (in network.jsonl) were written before cowork chained its log: not checked") {
		t.Fatalf("%+v\n%s", v, problems(v))
	}
	b, _ := os.ReadFile(path)
	os.WriteFile(path, append(b, old...), 0o600)
	wantProblems(t, verify(t, path, o), "network.jsonl 7 0 unchained")
}

func TestVerifyWithoutTheKey(t *testing.T) {
	path, o := newLog(t, 3)
	os.Remove(o.Key)
	if _, err := Verify(context.Background(), path, o); err == nil || !strings.Contains(err.Error(), "audit.key is missing") {
		t.Fatalf("err %v", err)
	}
	empty := filepath.Join(t.TempDir(), "network.jsonl")
	if v := verify(t, empty, testOptions(empty, 0, 0)); !v.OK || v.Records != 0 {
		t.Fatalf("no log: %+v", v)
	}
}

// A log checked under another key fails on every line, and the list of
// problems stays bounded.
func TestAnotherKeyFailsBounded(t *testing.T) {
	path := filepath.Join(t.TempDir(), "network.jsonl")
	o := testOptions(path, 1<<30, 0)
	writeRecords(t, path, o, maxProblems+50)
	os.Remove(o.Key)
	if _, err := loadOrMakeKey(o.Key); err != nil {
		t.Fatal(err)
	}
	v := verify(t, path, o)
	if v.OK || len(v.Problems) != maxProblems || v.MoreProblems != 51 || v.Problems[0].Kind != ProblemEdited {
		t.Fatalf("%d problems, %d more, first %+v", len(v.Problems), v.MoreProblems, v.Problems[0])
	}
}

// lineCount is the number of lines in the file at path.
func lineCount(t *testing.T, path string) string {
	b, _ := os.ReadFile(path)
	return strconv.Itoa(bytes.Count(b, []byte("\n")))
}
