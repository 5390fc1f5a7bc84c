package audit

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"syscall"
	"time"
)

// maxLine bounds one record; a longer line is skipped as damaged.
const maxLine = 1 << 20

// ParseLine decodes one line of the log.
func ParseLine(line []byte) (*Record, error) {
	line = bytes.TrimSpace(line)
	if len(line) == 0 {
		return nil, errors.New("empty line")
	}
	var r Record
	if err := json.Unmarshal(line, &r); err != nil {
		return nil, err
	}
	if r.Kind == KindRun && r.Run != nil {
		return &r, nil // a throwaway run's record: no verdict
	}
	if r.Kind == "" || (r.Verdict != Allow && r.Verdict != Deny) {
		return nil, fmt.Errorf("not an audit record: kind %q, verdict %q", r.Kind, r.Verdict)
	}
	return &r, nil
}

// Feed hands the records of a log's lines that are not before Since to
// Fn, and counts the damaged lines it skips. Stream feeds it the lines of
// the files of a log here; a reader of a log kept elsewhere (a cluster's
// egress proxy's, through cowork-hostd-kubevirt log) feeds it the lines
// it receives, so that both filter and check them alike.
type Feed struct {
	Since   time.Time
	Fn      func(*Record) error
	Skipped int
}

// Line feeds one line (without its newline); an error is Fn's.
func (f *Feed) Line(line []byte) error {
	r, err := ParseLine(line)
	if err != nil {
		if len(bytes.TrimSpace(line)) > 0 {
			f.Skipped++
		}
		return nil
	}
	if r.Time.Before(f.Since) {
		return nil
	}
	return f.Fn(r)
}

// Stream calls fn for each record of the log at path whose time is not
// before since: first the rotated files, oldest first, then path. With
// follow it then waits for new records, across rotations, until ctx ends.
// Damaged lines are skipped and counted.
func Stream(ctx context.Context, path string, since time.Time, follow bool, fn func(*Record) error) (skipped int, err error) {
	var files []string
	for i := DefaultKeep + 8; i >= 1; i-- {
		if p := fmt.Sprintf("%s.%d", path, i); exists(p) {
			files = append(files, p)
		}
	}
	feed := &Feed{Since: since, Fn: fn}
	defer func() { skipped = feed.Skipped }()
	emit := feed.Line
	for _, p := range files {
		f, err := os.Open(p)
		if err != nil {
			continue
		}
		_, err = readLines(f, emit)
		f.Close()
		if err != nil {
			return skipped, err
		}
	}
	t := &tailer{path: path}
	for {
		if err := t.poll(emit); err != nil {
			return skipped, err
		}
		if !follow {
			t.close()
			return skipped, nil
		}
		select {
		case <-ctx.Done():
			t.close()
			return skipped, nil
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// tailer reads what is appended to a file, reopening it when it is rotated.
type tailer struct {
	path    string
	f       *os.File
	ino     uint64
	partial []byte
}

func (t *tailer) poll(emit func([]byte) error) error {
	st, err := os.Stat(t.path)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return nil // not written yet
		}
		return err
	}
	ino := st.Sys().(*syscall.Stat_t).Ino
	if t.f != nil && ino != t.ino {
		// Rotated: finish the old file, then the files rotated after it
		// (path.k is the old one, path.k-1 ... path.1 came later), then
		// start on the new one.
		if _, err := t.read(emit); err != nil {
			return err
		}
		t.close()
		for i := t.rotatedIndex(); i > 1; i-- {
			f, err := os.Open(fmt.Sprintf("%s.%d", t.path, i-1))
			if err != nil {
				continue
			}
			_, err = readLines(f, emit)
			f.Close()
			if err != nil {
				return err
			}
		}
	}
	if t.f == nil {
		if t.f, err = os.Open(t.path); err != nil {
			return err
		}
		t.ino, t.partial = ino, nil
	}
	_, err = t.read(emit)
	return err
}

// rotatedIndex is k when the file the tailer had open is now path.k, or 0.
func (t *tailer) rotatedIndex() int {
	for i := 1; i <= DefaultKeep+8; i++ {
		st, err := os.Stat(fmt.Sprintf("%s.%d", t.path, i))
		if err != nil {
			return 0
		}
		if st.Sys().(*syscall.Stat_t).Ino == t.ino {
			return i
		}
	}
	return 0
}

func (t *tailer) read(emit func([]byte) error) (int, error) {
	buf, err := io.ReadAll(t.f)
	if err != nil {
		return 0, err
	}
	data := append(t.partial, buf...)
	n := 0
	for {
		i := bytes.IndexByte(data, '\n')
		if i < 0 {
			break
		}
		if err := emit(data[:i]); err != nil {
			return n, err
		}
		data = data[i+1:]
		n++
	}
	if len(data) > maxLine {
		data = nil // a runaway line: drop it
	}
	t.partial = append([]byte(nil), data...)
	return n, nil
}

func (t *tailer) close() {
	if t.f != nil {
		t.f.Close()
		t.f = nil
	}
}

func readLines(r io.Reader, emit func([]byte) error) (int, error) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), maxLine)
	n := 0
	for sc.Scan() {
		if err := emit(sc.Bytes()); err != nil {
			return n, err
		}
		n++
	}
	if errors.Is(sc.Err(), bufio.ErrTooLong) {
		return n, nil // the rest of a damaged file is lost, not the reader
	}
	return n, sc.Err()
}

func exists(p string) bool {
	_, err := os.Stat(p)
	return err == nil
}
