package audit

import (
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// The anchor names its record's mac as well as its seq: a log and an
// anchor from two copies of the log (one restored from a backup, then
// written on) do not match, though each is whole.
func TestAnAnchorOfAnotherCopyOfTheLogShows(t *testing.T) {
	path := filepath.Join(t.TempDir(), "network.jsonl")
	o := testOptions(path, 0, 0)
	writeRecords(t, path, o, 10)
	first, _ := os.ReadFile(path) // one copy: seq 1..10
	// The other: seq 1..8 of it, written on to seq 10 with other records.
	lines := fileLines(t, path)
	writeLines(t, path, lines[:8])
	os.Remove(o.Head)
	l, err := Open(path, o)
	if err != nil {
		t.Fatal(err)
	}
	for range 2 {
		l.Write(&Record{Kind: KindDNS, Verdict: Allow, Name: "other.example"})
	}
	l.Close()
	wantOK(t, verify(t, path, o))
	os.WriteFile(path, first, 0o600) // with the other copy's anchor
	v := verify(t, path, o)
	wantProblems(t, v, "audit.head 0 0 head")
	if !strings.Contains(v.Problems[0].Message, "names seq 10 with a mac that is not that record's (network.jsonl line 10)") {
		t.Fatal(problems(v))
	}
}

// The anchor is written only after the log's files are synced, so that
// after a power cut it never names records the disk lacks (verify would
// report a truncation that never happened, and Open move seq past it for
// good); the sync is the anchor's timer's, never a write's.
func TestTheAnchorFollowsASync(t *testing.T) {
	path := filepath.Join(t.TempDir(), "network.jsonl")
	o := testOptions(path, 2000, 3)
	l, err := Open(path, o)
	if err != nil {
		t.Fatal(err)
	}
	l.headEvery = time.Hour
	var mu sync.Mutex
	var synced []int64 // the anchor's seq at each sync
	fileSync := l.sync
	l.sync = func() error {
		hd, err := readHead(o.Head, l.key)
		if err != nil {
			t.Error(err)
			return err
		}
		mu.Lock()
		synced = append(synced, hd.Seq)
		mu.Unlock()
		return fileSync()
	}
	for range 50 { // rotating several times
		if err := l.Write(&Record{Kind: KindDNS, Verdict: Allow, Name: "a.example"}); err != nil {
			t.Fatal(err)
		}
	}
	if len(synced) != 0 {
		t.Fatalf("a write synced: %v", synced)
	}
	l.flushHead()
	if hd, _ := readHead(o.Head, l.key); len(synced) != 1 || synced[0] != 0 || hd.Seq != 50 {
		t.Fatalf("syncs %v, then the anchor at %d", synced, hd.Seq)
	}
	l.sync = func() error { return os.ErrInvalid } // a sync that fails leaves the anchor as it was
	l.Write(&Record{Kind: KindDNS, Verdict: Allow, Name: "a.example"})
	l.flushHead()
	if err := l.Close(); err == nil || !strings.Contains(err.Error(), "its anchor is left as it was") {
		t.Fatalf("Close: %v", err)
	}
	if hd, _ := readHead(o.Head, l.key); hd.Seq != 50 {
		t.Fatalf("the anchor at %d after failed syncs", hd.Seq)
	}
}

// The anchor is tagged with how the log rotates: verify judges the files
// by it, not by what its caller assumes.
func TestVerifyTakesTheRotationFromTheAnchor(t *testing.T) {
	path := filepath.Join(t.TempDir(), "network.jsonl")
	o := testOptions(path, 1500, 5)
	writeRecords(t, path, o, 60)
	hd, err := readHead(o.Head, mustKey(t, o.Key))
	if err != nil || hd.MaxSize != 1500 || hd.Keep != 5 || hd.Seq != 60 {
		t.Fatalf("%+v %v", hd, err)
	}
	v := verify(t, path, testOptions(path, DefaultMaxSize, DefaultKeep))
	if !v.OK || len(v.Files) != 6 || !v.RotatedAway {
		t.Fatalf("%+v\n%s", v, problems(v))
	}
}

func mustKey(t *testing.T, p string) []byte {
	t.Helper()
	k, err := readKey(p)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// hostd killed (no Close) after the log rotated and before its anchor
// caught up: the anchor names a file that is no longer the newest, but
// the records after it show why; no problem is reported, before or after
// the next start.
func TestAKillAfterARotationIsNoProblem(t *testing.T) {
	path := filepath.Join(t.TempDir(), "network.jsonl")
	o := testOptions(path, 1500, 3)
	writeRecords(t, path, o, 3)
	l, err := Open(path, o)
	if err != nil {
		t.Fatal(err)
	}
	l.headEvery = time.Hour
	for range 8 {
		l.Write(&Record{Kind: KindTCP, Verdict: Allow, Name: "a.example", Dst: "192.0.2.1:443"})
	}
	if _, err := os.Stat(path + ".1"); err != nil {
		t.Fatal("no rotation")
	}
	// no Close: as kill -9
	if v := verify(t, path, o); !v.OK || v.HeadSeq != 3 || v.LastSeq != 11 {
		t.Fatalf("%+v\n%s", v, problems(v))
	}
	writeRecords(t, path, o, 2)
	if v := verify(t, path, o); !v.OK || v.HeadSeq != 13 {
		t.Fatalf("%+v\n%s", v, problems(v))
	}
}
