package audit

import (
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

// maxLine bounds a line of the log with its newline; a longer one is
// skipped as damaged.
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
// Damaged lines are skipped and counted, as are lines over maxLine. It
// reads each file by chunks: what it holds is a chunk and a line, however
// large the log's files are.
func Stream(ctx context.Context, path string, since time.Time, follow bool, fn func(*Record) error) (skipped int, err error) {
	var files []string
	for i := DefaultKeep + 8; i >= 1; i-- {
		if p := fmt.Sprintf("%s.%d", path, i); exists(p) {
			files = append(files, p)
		}
	}
	feed := &Feed{Since: since, Fn: fn}
	t := &tailer{path: path}
	defer func() {
		t.close()
		skipped = feed.Skipped + t.lines.dropped
	}()
	emit := feed.Line
	for _, p := range files {
		if err := t.lines.file(p, emit); err != nil {
			return 0, err
		}
	}
	for {
		if err := t.poll(emit); err != nil {
			return 0, err
		}
		if !follow {
			return 0, nil
		}
		select {
		case <-ctx.Done():
			return 0, nil
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// tailer reads what is appended to a file, reopening it when it is rotated.
type tailer struct {
	path  string
	f     *os.File
	ino   uint64
	lines lines
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
		err := t.lines.all(t.f, emit)
		k := t.rotatedIndex()
		t.close()
		if err != nil {
			return err
		}
		for i := k; i > 1; i-- {
			if err := t.lines.file(fmt.Sprintf("%s.%d", t.path, i-1), emit); err != nil {
				return err
			}
		}
	}
	if t.f == nil {
		if t.f, err = os.Open(t.path); err != nil {
			return err
		}
		t.ino = ino
	}
	return t.lines.read(t.f, emit)
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

func (t *tailer) close() {
	if t.f != nil {
		t.f.Close()
		t.f = nil
	}
}

// readChunk is how much of a file lines reads at a time.
const readChunk = 64 << 10

// lines splits what it reads of a file into lines, holding no more than a
// chunk and one line of at most maxLine bytes with its newline: a longer
// line is dropped up to its newline, and counted. A line that has no
// newline yet waits for the next read, as the file grows.
type lines struct {
	buf     []byte // a chunk
	partial []byte // the line begun in an earlier chunk
	long    bool   // within a line over maxLine: dropped up to its newline
	dropped int    // how many lines over maxLine were dropped
}

// read hands emit each line r yields until r's end, which is no error;
// emit may not keep the line it is handed.
func (s *lines) read(r io.Reader, emit func([]byte) error) error {
	if s.buf == nil {
		s.buf = make([]byte, readChunk)
	}
	for {
		n, err := r.Read(s.buf)
		if err := s.split(s.buf[:n], emit); err != nil {
			return err
		}
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return err
		}
	}
}

// all reads r to its end, a file no longer written: its last line too,
// without its newline.
func (s *lines) all(r io.Reader, emit func([]byte) error) error {
	err := s.read(r, emit)
	if err == nil && len(s.partial) > 0 {
		err = emit(s.partial)
	}
	s.partial, s.long = s.partial[:0], false
	return err
}

// file reads the file at path as all does; one that is gone is skipped.
func (s *lines) file(path string, emit func([]byte) error) error {
	f, err := os.Open(path)
	if err != nil {
		return nil // rotated away since it was listed
	}
	defer f.Close()
	return s.all(f, emit)
}

// split hands emit the lines b ends, and keeps the one it begins.
func (s *lines) split(b []byte, emit func([]byte) error) error {
	for len(b) > 0 {
		i := bytes.IndexByte(b, '\n')
		part := b
		if i >= 0 {
			part = b[:i]
		}
		switch {
		case s.long:
		case len(s.partial)+len(part) >= maxLine:
			s.partial, s.long = s.partial[:0], true
			s.dropped++
		case i < 0:
			s.partial = append(s.partial, part...)
		case len(s.partial) == 0:
			if err := emit(part); err != nil {
				return err
			}
		default:
			s.partial = append(s.partial, part...)
			err := emit(s.partial)
			s.partial = s.partial[:0]
			if err != nil {
				return err
			}
		}
		if i < 0 {
			return nil
		}
		s.long = false
		b = b[i+1:]
	}
	return nil
}

func exists(p string) bool {
	_, err := os.Stat(p)
	return err == nil
}
