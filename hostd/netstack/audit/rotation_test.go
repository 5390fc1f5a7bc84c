package audit

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// Records removed and passed off as rotated away show: rotlog rotates a
// file only when the next line does not fit, so a rotated file that is
// empty, or that the next file's first line would have fit in, was made
// or cut by hand.
func TestFilesShiftedByHandShow(t *testing.T) {
	for _, c := range []struct {
		name   string
		tamper func(t *testing.T, path string)
		want   []string
	}{
		{"all but the newest file's records removed, the files shifted up", func(t *testing.T, path string) {
			for _, n := range []string{".3", ".2", ".1"} {
				os.Remove(path + n)
			}
			os.Rename(path, path+".3")
			for _, n := range []string{path + ".2", path + ".1", path} {
				os.WriteFile(n, nil, 0o600)
			}
		}, []string{"network.jsonl.2 0 0 not-full", "network.jsonl.1 0 0 not-full", "network.jsonl.3 0 0 not-full"}},
		{"the oldest file removed, the others shifted up, and the newest emptied", func(t *testing.T, path string) {
			os.Remove(path + ".3")
			os.Rename(path+".2", path+".3")
			os.Rename(path+".1", path+".2")
			os.Rename(path, path+".1")
			os.WriteFile(path, nil, 0o600)
		}, []string{"network.jsonl.1 0 0 not-full"}},
		{"records cut from a rotated file's end and from the next file's start", func(t *testing.T, path string) {
			a, b := fileLines(t, path+".2"), fileLines(t, path+".1")
			writeLines(t, path+".2", a[:len(a)-3])
			writeLines(t, path+".1", b[2:])
		}, []string{"network.jsonl.1 1 %m missing", "network.jsonl.2 0 0 not-full", "network.jsonl.1 0 0 not-full"}},
	} {
		t.Run(c.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "network.jsonl")
			o := testOptions(path, 1500, 3)
			writeRecords(t, path, o, 40)
			wantOK(t, verify(t, path, o))
			b := fileLines(t, path+".1")
			l, _ := parseLink(bytes.TrimSuffix(b[2], []byte("\n")))
			c.tamper(t, path)
			want := make([]string, len(c.want))
			for i, w := range c.want {
				want[i] = strings.ReplaceAll(w, "%m", fmt.Sprint(l.seq))
			}
			wantProblems(t, verify(t, path, o), want...)
		})
	}
}

// Files joined, so that the record the newest file began with is in the
// middle of one, show.
func TestFilesJoinedShow(t *testing.T) {
	path, o := newLog(t, 30) // Keep 20: nothing rotated away
	one, _ := os.ReadFile(path + ".1")
	cur, _ := os.ReadFile(path)
	os.WriteFile(path, append(one, cur...), 0o600)
	for i := 2; ; i++ {
		if os.Rename(fmt.Sprintf("%s.%d", path, i), fmt.Sprintf("%s.%d", path, i-1)) != nil {
			break
		}
	}
	v := verify(t, path, o)
	if len(v.Problems) != 1 || v.Problems[0].Kind != ProblemFile || v.Problems[0].File != "network.jsonl" || !strings.Contains(v.Problems[0].Message, "files were joined") {
		t.Fatalf("%s", problems(v))
	}
}

// Real rotation is never taken for files shifted by hand: records of
// all sizes, one longer than a file, a file rotated when hostd starts
// (rotlog's rotate-at-Open, of a file that is full), restarts between,
// and a stop right after such a rotation.
func TestRealRotationIsFull(t *testing.T) {
	path := filepath.Join(t.TempDir(), "network.jsonl")
	// Records written to a file as large as they are, so that hostd's
	// next start finds it full and rotates it.
	big := testOptions(path, 1<<20, 3)
	writeRecords(t, path, big, 5)
	st, _ := os.Stat(path)
	o := testOptions(path, st.Size(), 3)
	for round := range 6 {
		l, err := Open(path, o)
		if err != nil {
			t.Fatal(err)
		}
		for i := range round * 7 {
			r := &Record{Kind: KindTCP, Verdict: Allow, Name: strings.Repeat("n", (i*37)%300), Dst: "192.0.2.1:443"}
			if i == 3 {
				r.URL = strings.Repeat("u", 5000) // longer than a file: clipped to fit
			}
			if err := l.Write(r); err != nil {
				t.Fatal(err)
			}
		}
		l.Close()
		if round == 0 { // the full file was rotated, and nothing written since
			if b, err := os.ReadFile(path); err != nil || len(b) != 0 {
				t.Fatalf("no rotation at start: %d bytes, %v", len(b), err)
			}
		}
		v := verify(t, path, o)
		if !v.OK {
			t.Fatalf("round %d: %s", round, problems(v))
		}
	}
}

// Many writers, rotation, the anchor following every few records, and
// verify all at once: verify never reports a problem, and the final log
// verifies with its anchor at its last record.
func TestVerifyWhileManyWrite(t *testing.T) {
	for iter := range 3 {
		path := filepath.Join(t.TempDir(), "network.jsonl")
		o := testOptions(path, 4000, 3)
		o.Live = true
		l, err := Open(path, o)
		if err != nil {
			t.Fatal(err)
		}
		l.headEvery = 50 * time.Microsecond
		stop := make(chan struct{})
		var alarms []string
		var vwg sync.WaitGroup
		vwg.Go(func() {
			for {
				select {
				case <-stop:
					return
				default:
				}
				v, err := Verify(context.Background(), path, o)
				if err != nil {
					alarms = append(alarms, err.Error())
				} else if !v.OK {
					alarms = append(alarms, problems(v))
				}
			}
		})
		var wg sync.WaitGroup
		for g := range 8 {
			wg.Go(func() {
				for i := range 2000 {
					l.Write(&Record{Kind: KindDNS, Verdict: Allow, Name: strings.Repeat("a", i%40) + ".example", BytesIn: int64(g*1000 + i)})
				}
			})
		}
		wg.Wait()
		l.Close()
		close(stop)
		vwg.Wait()
		if len(alarms) > 0 {
			t.Fatalf("iteration %d: %d false alarms, the first:\n%s", iter, len(alarms), alarms[0])
		}
		o.Live = false
		if v := verify(t, path, o); !v.OK || v.HeadSeq != v.LastSeq || v.LastSeq != 16000 {
			t.Fatalf("iteration %d: %+v\n%s", iter, v, problems(v))
		}
	}
}
