package audit

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"
)

// A reader holds a chunk and a line of the log, not its file: reading a
// current file of 48 MiB allocates a few MiB at most, as reading its
// rotated files does. (It once read the whole file into memory: a
// reader per `cowork proxy` made an egress pod hold its log many times
// over.)
func TestStreamReadsALargeFileInBoundedMemory(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "network.jsonl")
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	rec := func(name string) string {
		return `{"time":"2026-12-06T10:00:00Z","kind":"dns","verdict":"allow","name":"` + name + `"}` + "\n"
	}
	f.WriteString(rec("first.example"))
	// Blank lines: skipped without a parse, so that what the reading
	// itself allocates shows.
	blank := strings.Repeat(" ", 1023) + "\n"
	for range 48 << 10 {
		f.WriteString(blank)
	}
	f.WriteString(rec("last.example"))
	f.Close()
	for _, p := range []string{path, path + ".1"} { // the current file, and a rotated one
		if p != path {
			if err := os.Rename(path, p); err != nil {
				t.Fatal(err)
			}
		}
		var got []string
		var before, after runtime.MemStats
		runtime.GC()
		runtime.ReadMemStats(&before)
		skipped, err := Stream(context.Background(), path, time.Time{}, false, func(r *Record) error {
			got = append(got, r.Name)
			return nil
		})
		runtime.ReadMemStats(&after)
		if err != nil || skipped != 0 || strings.Join(got, " ") != "first.example last.example" {
			t.Fatalf("%s: %q, %d skipped, %v", p, got, skipped, err)
		}
		if n := after.TotalAlloc - before.TotalAlloc; n > 4<<20 {
			t.Errorf("reading %s (48 MiB) allocated %d MiB", filepath.Base(p), n>>20)
		}
	}
}

// A followed file is read as it grows: a line that has no newline yet
// waits for the rest; one over maxLine, however it comes, is dropped up
// to its newline and counted, and the lines after it are read; one of
// maxLine bytes with its newline is read.
func TestTailerSplitsLinesAsTheyCome(t *testing.T) {
	path := filepath.Join(t.TempDir(), "network.jsonl")
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	tl := &tailer{path: path}
	defer tl.close()
	var got []string
	poll := func(appended ...string) {
		t.Helper()
		for _, s := range appended {
			f.WriteString(s)
		}
		if err := tl.poll(func(line []byte) error {
			if bytes.Count(line, []byte("x")) == len(line) && len(line) > 10 {
				got = append(got, "x*"+strconv.Itoa(len(line)))
			} else {
				got = append(got, string(line))
			}
			return nil
		}); err != nil {
			t.Fatal(err)
		}
	}
	poll("a1\nb")
	poll("2\n")
	poll("c3")
	poll()
	poll("\n")
	poll(strings.Repeat("x", 700<<10))           // a line begun, under the bound so far
	poll(strings.Repeat("x", 500<<10), "\nd4\n") // and over it now
	poll(strings.Repeat("x", 3<<20) + "\ne5\n")  // over it within one read
	poll(strings.Repeat("x", maxLine-1) + "\n")  // at the bound
	poll(strings.Repeat("x", maxLine) + "\nf6\n")
	want := "a1 b2 c3 d4 e5 x*" + strconv.Itoa(maxLine-1) + " f6"
	if s := strings.Join(got, " "); s != want {
		t.Errorf("lines %.200q, want %q", s, want)
	}
	if tl.lines.dropped != 3 {
		t.Errorf("dropped %d lines over the bound, want 3", tl.lines.dropped)
	}
	if cap(tl.lines.partial) > maxLine+readChunk {
		t.Errorf("holds %d bytes of a line", cap(tl.lines.partial))
	}
}
