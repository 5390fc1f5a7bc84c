package audit

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// testOptions keeps the chain's key and anchor beside the log at path.
func testOptions(path string, maxSize int64, keep int) Options {
	dir := filepath.Dir(path)
	return Options{MaxSize: maxSize, Keep: keep, Key: filepath.Join(dir, "audit.key"), Head: filepath.Join(dir, "audit.head")}
}

// writeRecords appends n records to the log at path.
func writeRecords(t testing.TB, path string, o Options, n int) {
	t.Helper()
	l, err := Open(path, o)
	if err != nil {
		t.Fatal(err)
	}
	for i := range n {
		if err := l.Write(&Record{Kind: KindTCP, Verdict: Allow, Name: fmt.Sprintf("host%d.example", i), Dst: "192.0.2.7:443", BytesOut: 10, BytesIn: int64(i)}); err != nil {
			t.Fatal(err)
		}
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
}

// newLog is a closed log of n records in files of about six records, all
// kept.
func newLog(t *testing.T, n int) (string, Options) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "network.jsonl")
	o := testOptions(path, 1500, 20)
	writeRecords(t, path, o, n)
	return path, o
}

func verify(t *testing.T, path string, o Options) *Verification {
	t.Helper()
	v, err := Verify(context.Background(), path, o)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

func wantOK(t *testing.T, v *Verification) {
	t.Helper()
	if !v.OK || len(v.Problems) != 0 {
		t.Fatalf("not ok: %s", problems(v))
	}
}

// wantProblems checks that v lists exactly these problems, as
// "file line seq kind" (line and seq 0 when absent).
func wantProblems(t *testing.T, v *Verification, want ...string) {
	t.Helper()
	var got []string
	for _, p := range v.Problems {
		got = append(got, fmt.Sprintf("%s %d %d %s", p.File, p.Line, p.Seq, p.Kind))
	}
	if v.OK || strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Fatalf("problems:\n%s\nwant:\n%s", problems(v), strings.Join(want, "\n"))
	}
}

func problems(v *Verification) string {
	var b strings.Builder
	for _, p := range v.Problems {
		b.WriteString(p.String() + "\n")
	}
	return b.String()
}

// fileLines and writeLines edit one of the log's files by lines.
func fileLines(t *testing.T, p string) [][]byte {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return bytes.SplitAfter(b, []byte("\n"))
}

func writeLines(t *testing.T, p string, lines [][]byte) {
	t.Helper()
	if err := os.WriteFile(p, bytes.Join(lines, nil), 0o600); err != nil {
		t.Fatal(err)
	}
}

func TestChainAcrossRotationAndRestarts(t *testing.T) {
	path, o := newLog(t, 40)
	writeRecords(t, path, o, 25) // hostd restarted
	v := verify(t, path, o)
	wantOK(t, v)
	if v.Records != 65 || v.FirstSeq != 1 || v.LastSeq != 65 || v.HeadSeq != 65 || len(v.Files) < 4 || v.RotatedAway || v.Unchained != 0 {
		t.Fatalf("%+v", v)
	}
	// Every file's first line names the mac before it; seq runs on, and
	// ParseLine reads it.
	seq := int64(0)
	for _, name := range v.Files {
		for i, line := range fileLines(t, filepath.Join(filepath.Dir(path), name)) {
			if len(line) == 0 {
				continue
			}
			if (i == 0) != bytes.Contains(line, []byte(`"prev":`)) {
				t.Errorf("%s line %d: prev on a file's first line only: %s", name, i+1, line)
			}
			r, err := ParseLine(line)
			if err != nil || r.Seq != seq+1 || r.Kind != KindTCP {
				t.Fatalf("%s line %d: %+v %v", name, i+1, r, err)
			}
			seq = r.Seq
		}
	}
}

// Files rotated away past Keep are gone by design: the oldest kept file
// is checked from its first line on, and verify says where it starts.
func TestVerifyStartsAtTheOldestKeptFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "network.jsonl")
	o := testOptions(path, 1500, 3)
	writeRecords(t, path, o, 60)
	v := verify(t, path, o)
	wantOK(t, v)
	if !v.RotatedAway || v.FirstSeq <= 1 || v.LastSeq != 60 || len(v.Files) != 4 || v.Records != 61-v.FirstSeq || !strings.Contains(strings.Join(v.Notes, "\n"), "older records rotated away") {
		t.Fatalf("%+v", v)
	}
	// Without network.jsonl.3, the log does not reach back to what
	// rotation took: its start was cut.
	os.Remove(path + ".3")
	v = verify(t, path, o)
	if len(v.Problems) != 1 || v.Problems[0].Kind != ProblemCut || v.Problems[0].File != "network.jsonl.2" || v.Problems[0].Line != 1 {
		t.Fatalf("%s", problems(v))
	}
}

func TestVerifyFindsEveryTampering(t *testing.T) {
	for _, c := range []struct {
		name   string
		tamper func(t *testing.T, path string, o Options)
		want   []string
	}{
		{"one byte of a record edited", func(t *testing.T, path string, o Options) {
			lines := fileLines(t, path+".2")
			lines[2] = bytes.Replace(lines[2], []byte(`"bytes_out":10`), []byte(`"bytes_out":19`), 1)
			writeLines(t, path+".2", lines)
		}, []string{"network.jsonl.2 3 %s edited"}},
		{"a line deleted", func(t *testing.T, path string, o Options) {
			lines := fileLines(t, path+".2")
			writeLines(t, path+".2", append(lines[:2:2], lines[3:]...))
		}, []string{"network.jsonl.2 3 %+1 missing"}},
		{"two lines swapped", func(t *testing.T, path string, o Options) {
			lines := fileLines(t, path+".2")
			lines[2], lines[3] = lines[3], lines[2]
			writeLines(t, path+".2", lines)
		}, []string{"network.jsonl.2 3 %+1 missing", "network.jsonl.2 4 %s moved"}},
		{"a line forged without the key", func(t *testing.T, path string, o Options) {
			lines := fileLines(t, path+".2")
			l, _ := parseLink(bytes.TrimSuffix(lines[2], []byte("\n")))
			forged := forge(t, lines[2], l.seq+1, l.mac)
			writeLines(t, path+".2", append(lines[:3:3], append([][]byte{forged}, lines[3:]...)...))
		}, []string{"network.jsonl.2 4 %+1 edited", "network.jsonl.2 5 %+1 moved"}},
		{"lines cut from the end", func(t *testing.T, path string, o Options) {
			lines := fileLines(t, path)
			writeLines(t, path, lines[:len(lines)-3])
		}, []string{"network.jsonl 0 0 truncated"}},
		{"the last line cut in half", func(t *testing.T, path string, o Options) {
			b, _ := os.ReadFile(path)
			os.WriteFile(path, b[:len(b)-100], 0o600)
		}, []string{"network.jsonl 6 0 unfinished", "network.jsonl 0 0 truncated"}},
		{"a line in the middle cut in half", func(t *testing.T, path string, o Options) {
			lines := fileLines(t, path+".2")
			lines[2] = append(lines[2][:len(lines[2])/2:len(lines[2])/2], '\n')
			writeLines(t, path+".2", lines)
		}, []string{"network.jsonl.2 3 0 unchained", "network.jsonl.2 4 %+1 missing"}},
		{"a line stripped of its chain", func(t *testing.T, path string, o Options) {
			lines := fileLines(t, path+".2")
			r, _ := ParseLine(lines[2])
			r.Seq = 0
			lines[2] = append(mustJSON(t, r), '\n')
			writeLines(t, path+".2", lines)
		}, []string{"network.jsonl.2 3 0 unchained", "network.jsonl.2 4 %+1 missing"}},
		{"a middle file removed", func(t *testing.T, path string, o Options) {
			os.Remove(path + ".2")
		}, []string{"network.jsonl.2 0 0 file", "network.jsonl.1 1 %f1 missing"}},
		{"the current file removed", func(t *testing.T, path string, o Options) {
			os.Remove(path)
		}, []string{"network.jsonl 0 0 file", "network.jsonl.1 0 0 truncated"}},
		{"the oldest file's first lines removed", func(t *testing.T, path string, o Options) {
			lines := fileLines(t, path+".4")
			writeLines(t, path+".4", lines[2:])
		}, []string{"network.jsonl.4 1 3 cut", "network.jsonl.4 0 0 not-full"}},
		{"the anchor removed", func(t *testing.T, path string, o Options) {
			os.Remove(o.Head)
		}, []string{"audit.head 0 0 head"}},
		{"the anchor edited to match a shortened log", func(t *testing.T, path string, o Options) {
			lines := fileLines(t, path)
			writeLines(t, path, lines[:len(lines)-3])
			l, _ := parseLink(bytes.TrimSuffix(lines[len(lines)-4], []byte("\n")))
			b, _ := os.ReadFile(o.Head)
			b = bytes.Replace(b, []byte(`"seq":30`), fmt.Appendf(nil, `"seq":%d`, l.seq), 1)
			os.WriteFile(o.Head, bytes.Replace(b, b[bytes.Index(b, []byte(`"mac":"`))+7:][:macHex], l.mac, 1), 0o600)
		}, []string{"audit.head 0 0 head"}},
	} {
		t.Run(c.name, func(t *testing.T) {
			path, o := newLog(t, 30)
			wantOK(t, verify(t, path, o))
			// The seq of line 3 of network.jsonl.2 (%s), the one after it
			// (%+1), and of network.jsonl.1's first line (%f1).
			l, _ := parseLink(bytes.TrimSuffix(fileLines(t, path+".2")[2], []byte("\n")))
			f1, _ := parseLink(bytes.TrimSuffix(fileLines(t, path+".1")[0], []byte("\n")))
			c.tamper(t, path, o)
			want := make([]string, len(c.want))
			for i, w := range c.want {
				w = strings.ReplaceAll(w, "%s", fmt.Sprint(l.seq))
				w = strings.ReplaceAll(w, "%+1", fmt.Sprint(l.seq+1))
				want[i] = strings.ReplaceAll(w, "%f1", fmt.Sprint(f1.seq))
			}
			wantProblems(t, verify(t, path, o), want...)
		})
	}
}

// forge makes a chained line of seq after mac from line's record, as one
// without the key would: under another key.
func forge(t *testing.T, line []byte, seq int64, prev []byte) []byte {
	r, err := ParseLine(line)
	if err != nil {
		t.Fatal(err)
	}
	r.Seq, r.Name = 0, "forged.example"
	body := mustJSON(t, r)
	body = fmt.Appendf(body[:len(body)-1], `,"seq":%d`, seq)
	var mac [macHex]byte
	newMacer(bytes.Repeat([]byte{7}, keyLen)).mac(prev, body, &mac)
	return fmt.Appendf(body, `,"mac":"%s"}`+"\n", mac)
}

func mustJSON(t *testing.T, v any) []byte {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// A file missing between two others of a live log is reported: when the
// writer rotates under its lock (the files hold still while verify holds
// it shared), and, for a writer without one, once the gap has held
// still, not taken for a rotation in its middle for ever.
func TestAMiddleFileRemovedFromALiveLog(t *testing.T) {
	for _, locked := range []bool{true, false} {
		path, o := newLog(t, 30)
		if _, err := os.Stat(RotationLock(path)); err != nil {
			t.Fatalf("the writer made no rotation lock: %v", err)
		}
		if !locked {
			os.Remove(RotationLock(path))
		}
		os.Remove(path + ".2")
		o.Live = true
		began := time.Now()
		v := verify(t, path, o)
		if v.OK || len(v.Problems) == 0 || v.Problems[0].File != "network.jsonl.2" || !strings.Contains(v.Problems[0].Message, "missing") {
			t.Fatalf("locked %v: a live log without its middle file: %s", locked, problems(v))
		}
		if took := time.Since(began); !locked && (took < gapSettle || took > rotationWait) {
			t.Errorf("reported after %v, want between %v and %v", took, gapSettle, rotationWait)
		}
	}
}

// A writer held up in the middle of a rotation (a file moved, the next
// not yet) for longer than a gap's settling time is waited for, not
// reported: verify takes the rotation lock the writer holds.
func TestAWriterHeldUpMidRotation(t *testing.T) {
	path, o := newLog(t, 30)
	lock, err := os.OpenFile(RotationLock(path), os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer lock.Close()
	fd := int(lock.Fd())
	if err := syscall.Flock(fd, syscall.LOCK_EX); err != nil {
		t.Fatal(err)
	}
	// As a rotation does: .2 moved to .3 (absent so far), .1 not yet.
	if err := os.Rename(path+".2", path+".moving"); err != nil {
		t.Fatal(err)
	}
	ended := make(chan struct{})
	defer func() { <-ended }() // before the lock's file closes
	go func() {
		defer close(ended)
		time.Sleep(3 * gapSettle)
		os.Rename(path+".moving", path+".2") // put back: the rotation "ends"
		syscall.Flock(fd, syscall.LOCK_UN)
	}()
	o.Live = true
	if v := verify(t, path, o); !v.OK {
		t.Fatalf("a rotation held up mid-way was taken for a gap: %s", problems(v))
	}
}
