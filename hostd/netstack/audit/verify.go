package audit

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"time"
)

// Verification is what Verify found in a log: OK when nothing in it
// shows tampering.
type Verification struct {
	OK bool `json:"ok"`
	// Records is how many chained lines were checked; FirstSeq and
	// LastSeq the first and the highest seq among them.
	Records  int64 `json:"records"`
	FirstSeq int64 `json:"first_seq"`
	LastSeq  int64 `json:"last_seq"`
	// Files are the log's files that were read, the oldest first.
	Files []string `json:"files"`
	// HeadSeq is the seq the anchor names (0 without a valid anchor).
	HeadSeq int64 `json:"head_seq"`
	// RotatedAway says the records before FirstSeq went by rotation.
	RotatedAway bool `json:"rotated_away"`
	// Unchained counts lines written before the log was chained (by an
	// older cowork): they precede seq 1 and are not checked.
	Unchained int `json:"unchained"`
	// Partial says the newest file ends in an unfinished line while a
	// writer may be live (Options.Live): it was left out, as one being
	// written. Without a live writer such a line is a problem.
	Partial bool `json:"partial"`
	// Notes say in words what the fields above mean for this log.
	Notes    []string  `json:"notes"`
	Problems []Problem `json:"problems"`
	// MoreProblems counts the problems past the first maxProblems.
	MoreProblems int `json:"more_problems,omitempty"`
}

// Problem is one sign of tampering, where it shows.
type Problem struct {
	File string `json:"file"`
	// Line is the line it is at, from 1; 0 (left out of the JSON) for a
	// problem of a file as a whole (file, not-full, truncated) or of the
	// anchor (head).
	Line int `json:"line,omitempty"`
	// Seq is the chained record it is at; 0 (left out) where there is
	// none: a line that is no chained record (unchained, over-long,
	// unfinished, cut-write) and the problems of a file or the anchor.
	Seq     int64  `json:"seq,omitempty"`
	Kind    string `json:"kind"`
	Message string `json:"message"`
}

// Kinds of Problem.
const (
	ProblemEdited     = "edited"     // a mac that does not follow from the record before
	ProblemMissing    = "missing"    // records missing between two lines
	ProblemMoved      = "moved"      // a record after one with a higher seq
	ProblemUnchained  = "unchained"  // a line without the chain's fields where they must be
	ProblemLong       = "over-long"  // a line longer than any the log writes: not read
	ProblemUnfinished = "unfinished" // text after the last line's end, and no writer live
	ProblemCutWrite   = "cut-write"  // a write cut short (a full disk): its record is lost, not necessarily by tampering
	ProblemCut        = "cut"        // records removed from the log's start
	ProblemTruncated  = "truncated"  // records removed from the log's end
	ProblemFile       = "file"       // a rotated file missing between others, or files joined
	ProblemNotFull    = "not-full"   // a rotated file that was not full: records removed from it, or files shifted
	ProblemHead       = "head"       // the anchor is missing, forged, or of another copy of the log
)

func (p Problem) String() string {
	var b strings.Builder
	b.WriteString(p.File)
	if p.Line > 0 {
		fmt.Fprintf(&b, " line %d", p.Line)
	}
	if p.Seq > 0 {
		fmt.Fprintf(&b, " (seq %d)", p.Seq)
	}
	b.WriteString(": " + p.Message)
	return b.String()
}

// maxProblems bounds the problems listed: a log under another key has
// one a line.
const maxProblems = 1000

// Verify checks the chain of the log at path (and its rotated files)
// against its key and anchor, reading only files: the instance may be
// stopped, or running (o.Live: a line being appended is left out; the
// anchor is read first, so it never names a record the files do not hold
// yet). How the log rotates (MaxSize, Keep) is taken from the anchor,
// which the writer tags with them, else from o. An error means the log
// could not be checked at all; what it shows is in the Verification.
func Verify(ctx context.Context, path string, o Options) (*Verification, error) {
	o, err := o.withDefaults()
	if err != nil {
		return nil, err
	}
	key, err := readKey(o.Key)
	noKey := errors.Is(err, os.ErrNotExist)
	if err != nil && !noKey {
		return nil, err
	}
	var hd *head
	var headErr error
	if !noKey {
		hd, headErr = readHead(o.Head, key)
	}
	maxSize, keep := o.MaxSize, o.Keep
	if hd != nil && hd.MaxSize > 0 && hd.Keep > 0 {
		maxSize, keep = hd.MaxSize, hd.Keep
	}
	files, err := openFiles(path, keep, o.Live)
	if err != nil {
		return nil, err
	}
	defer func() {
		for _, f := range files {
			f.f.Close()
		}
	}()
	c := &checker{v: &Verification{Files: []string{}, Notes: []string{}, Problems: []Problem{}},
		keep: keep, maxSize: maxSize, live: o.Live, hd: hd, base: filepath.Base(path)}
	if !noKey {
		c.m = newMacer(key)
	}
	for i, f := range files {
		c.v.Files = append(c.v.Files, f.name)
		if i > 0 { // a file between two others is gone
			for j := files[i-1].index - 1; j > f.index; j-- {
				c.file, c.lineNo = fileName(c.base, j), 0
				c.problem(ProblemFile, 0, "missing, though files before and after it are there: its records are gone")
			}
		}
		if err := c.read(ctx, f, i == len(files)-1); err != nil {
			return nil, err
		}
	}
	if noKey {
		if c.v.Records > 0 {
			return nil, fmt.Errorf("%s is missing, so the log's chain cannot be checked: restore the key from a backup", o.Key)
		}
		if len(files) == 0 {
			c.v.OK = true
			c.note("no audit log yet")
			return c.v, nil
		}
	}
	c.finish(headErr, filepath.Base(o.Head), noKey)
	return c.v, nil
}

// logFile is one of the log's files, open: index k is path.k, 0 path.
type logFile struct {
	f     *os.File
	name  string
	index int
}

func fileName(base string, index int) string {
	if index == 0 {
		return base
	}
	return fmt.Sprintf("%s.%d", base, index)
}

// openFiles opens the log's files, the oldest first. A rotation renames
// the files one by one: opened in its middle, the set would miss a file
// or hold one twice. So the files are opened newest first, then every
// name is checked to still be the file opened. A live log's set with a
// gap (which a rotation shows for a moment) is taken, for the checker to
// report, only once the same files have shown the same gap for
// gapSettle; a log no one writes is taken as it is.
func openFiles(path string, keep int, live bool) ([]logFile, error) {
	if live {
		// The writer rotates under this lock (see Open): held shared, the
		// files hold still, and a gap among them is one.
		if unlock, ok := lockRotation(path); ok {
			defer unlock()
			live = false
		}
	}
	dir, base := filepath.Dir(path), filepath.Base(path)
	var gap []os.FileInfo // the files of a gap seen before, and since when
	var gapSince time.Time
	deadline := time.Now().Add(rotationWait)
	for try := 1; ; try++ {
		var files []logFile
		for i := 0; i <= keep+8; i++ {
			name := fileName(base, i)
			f, err := os.Open(filepath.Join(dir, name))
			if errors.Is(err, os.ErrNotExist) {
				continue
			}
			if err != nil {
				closeAll(files)
				return nil, err
			}
			files = append([]logFile{{f: f, name: name, index: i}}, files...)
		}
		if stable(dir, files) {
			if contiguous(files) || !live {
				return files, nil
			}
			// A file missing between two others is a gap only if it
			// stays one: a rotation shifting the files shows one for a
			// moment, and a writer held up mid-rotation for a while.
			switch now := infos(files); {
			case !sameFiles(now, gap):
				gap, gapSince = now, time.Now()
			case time.Since(gapSince) >= gapSettle:
				return files, nil
			}
		}
		closeAll(files)
		if time.Now().After(deadline) {
			return nil, errors.New("the log kept rotating while it was opened; run verify again")
		}
		time.Sleep(time.Duration(min(try, 10)) * time.Millisecond)
	}
}

// RotationLock is the file the writer of the log at path holds locked
// while it rotates the log's files.
func RotationLock(path string) string { return path + ".rotating" }

// lockRotation takes the log's rotation lock shared, waiting out a
// rotation for rotationWait at most; ok is false when the log has no
// such lock (a writer older than it) or it stayed held.
func lockRotation(path string) (unlock func(), ok bool) {
	f, err := os.Open(RotationLock(path))
	if err != nil {
		return nil, false
	}
	deadline := time.Now().Add(rotationWait)
	for {
		err := syscall.Flock(int(f.Fd()), syscall.LOCK_SH|syscall.LOCK_NB)
		if err == nil {
			return func() { syscall.Flock(int(f.Fd()), syscall.LOCK_UN); f.Close() }, true
		}
		if !errors.Is(err, syscall.EWOULDBLOCK) || time.Now().After(deadline) {
			f.Close()
			return nil, false
		}
		time.Sleep(time.Millisecond)
	}
}

// How long openFiles waits for a live log's files to hold still, and how
// long a gap between them must last to be one.
const (
	rotationWait = 5 * time.Second
	gapSettle    = 100 * time.Millisecond
)

// infos are the files' FileInfos (nil for one that cannot be read).
func infos(files []logFile) []os.FileInfo {
	out := make([]os.FileInfo, len(files))
	for i, f := range files {
		out[i], _ = f.f.Stat()
	}
	return out
}

// sameFiles says whether a and b are the same files, in order.
func sameFiles(a, b []os.FileInfo) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] == nil || b[i] == nil || a[i].Name() != b[i].Name() || !os.SameFile(a[i], b[i]) {
			return false
		}
	}
	return true
}

// contiguous says the files run from path.k down to path with none
// missing.
func contiguous(files []logFile) bool {
	for i, f := range files {
		if f.index != len(files)-1-i {
			return false
		}
	}
	return true
}

func stable(dir string, files []logFile) bool {
	for _, f := range files {
		a, err1 := f.f.Stat()
		b, err2 := os.Stat(filepath.Join(dir, f.name))
		if err1 != nil || err2 != nil || !os.SameFile(a, b) {
			return false
		}
	}
	return true
}

func closeAll(files []logFile) {
	for _, f := range files {
		f.f.Close()
	}
}

// checker walks the log's lines in order, keeping what the chain needs.
type checker struct {
	v       *Verification
	m       *macer // nil without a key: the macs are not checked
	keep    int
	maxSize int64
	live    bool  // a writer may be appending (Options.Live)
	hd      *head // the anchor, nil without a valid one
	base    string

	file   string // where it is
	index  int
	lineNo int

	started bool           // a chained line was seen
	maxSeq  int64          // the highest seq seen
	recent  [64]recentLine // the last chained lines, a ring: what a moved line chains from
	n       int            // lines put in recent

	unchainedAt []string // where the lines before the chain are, for a note
	mac         [macHex]byte

	pending *where // an unchained line after the chain began: a cut write's, if the next record says so

	files []fileStat // the files read, the oldest first
	cur   *fileStat  // the one being read

	headAt    *where // where the anchor's record is (its first line of that seq)
	headMatch bool   // and its mac is the anchor's
	fileSeqAt *where // where the anchor's FileSeq record is
	fileSeqIn int    // in which of files
}

// where is a line of the log.
type where struct {
	file string
	line int
	n    int64 // its length, without the '\n'
	// first says it is the first chained line of its file.
	first bool
}

// fileStat is what the checker learnt of one file.
type fileStat struct {
	name  string
	index int
	size  int64
	// firstLen is the first line's length with its '\n', 0 when the file
	// holds no whole line; firstChained says it is a chained record.
	firstLen     int64
	firstChained bool
	lines        int64 // whole lines
	firstSeq     int64 // the first chained record's seq, 0 for none
	records      int64 // chained records
}

// maxVerifyLine bounds a line verify reads: far over the longest the log
// writes (maxLineLen), so that a longer one is reported (over-long), not
// read.
const maxVerifyLine = 1 << 20

// read checks the lines of one file. The newest file's unfinished last
// line is left out when a writer may be live (it is being written), and
// reported when none is.
func (c *checker) read(ctx context.Context, f logFile, newest bool) error {
	c.file, c.index, c.lineNo = f.name, f.index, 0
	c.files = append(c.files, fileStat{name: f.name, index: f.index})
	c.cur = &c.files[len(c.files)-1]
	r := bufio.NewReaderSize(f.f, 1<<20)
	var long []byte // a line longer than the buffer, gathered
	var longN int64 // its length so far
	for {
		part, err := r.ReadSlice('\n')
		c.cur.size += int64(len(part))
		if errors.Is(err, bufio.ErrBufferFull) {
			if longN+int64(len(part)) <= maxVerifyLine {
				long = append(long, part...)
			}
			longN += int64(len(part))
			continue
		}
		if err != nil && err != io.EOF {
			return err
		}
		line, n := part, longN+int64(len(part))
		if longN > 0 {
			line = append(long, part...)
			long, longN = long[:0], 0
		}
		whole := err == nil // the line ends with its '\n'
		if whole {
			line = line[:len(line)-1]
		}
		chained := false
		switch {
		case n == 0:
		case !whole && newest && c.live:
			c.v.Partial = true
			c.note(fmt.Sprintf("the last line of %s is unfinished (being written): left out", c.file))
		case !whole && newest:
			c.flushPending()
			c.lineNo++
			c.problem(ProblemUnfinished, 0, fmt.Sprintf("the last line is unfinished (%d bytes without an end), and hostd is not running: text added after the last record, or hostd stopped while writing it (a crash, a power cut; its next start drops the line)", n))
		case n > maxVerifyLine:
			c.overLong(n)
		default:
			chained = c.line(line)
		}
		if !whole {
			return nil
		}
		if c.cur.lines == 0 {
			c.cur.firstLen, c.cur.firstChained = n, chained
		}
		c.cur.lines++
		if c.lineNo%65536 == 0 {
			if err := ctx.Err(); err != nil {
				return err
			}
		}
	}
}

func (c *checker) note(s string) { c.v.Notes = append(c.v.Notes, s) }

func (c *checker) problem(kind string, seq int64, msg string) {
	c.problemAt(c.file, c.lineNo, kind, seq, msg)
}

func (c *checker) problemAt(file string, line int, kind string, seq int64, msg string) {
	if len(c.v.Problems) >= maxProblems {
		c.v.MoreProblems++
		return
	}
	c.v.Problems = append(c.v.Problems, Problem{File: file, Line: line, Seq: seq, Kind: kind, Message: msg})
}
