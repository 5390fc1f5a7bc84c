package audit

import (
	"bytes"
	"errors"
	"fmt"
	"os"
)

// line checks one line of the log (without its '\n') against the chain
// so far. Each line is checked against the mac of the record whose seq
// is one less, wherever it stands among the last few lines, so an edit
// shows on the edited line alone and a moved line as moved, not as a
// run of broken macs after it. It says whether the line is a chained
// record.
func (c *checker) line(b []byte) bool {
	c.lineNo++
	l, ok := parseLink(b)
	if !ok {
		if !c.started {
			c.beforeChain()
			return false
		}
		// Reported with the next line: a record that says a write was
		// cut before it makes this the line that write left.
		c.flushPending()
		c.pending = &where{file: c.file, line: c.lineNo, n: int64(len(b))}
		return false
	}
	if c.pending != nil || l.cut > 0 {
		c.resolveCut(l)
	}
	var prev []byte // the mac l should chain from; nil when unknown
	if !c.started {
		prev = c.start(l)
	} else {
		switch {
		case l.prev != nil:
			prev = l.prev
		case c.n > 0 && c.recentAt(0).seq == l.seq-1:
			prev = c.recentAt(0).mac[:]
		default:
			prev = c.find(l.seq - 1)
		}
		switch {
		case l.seq > c.maxSeq+1:
			c.problem(ProblemMissing, l.seq, fmt.Sprintf("seq jumps from %d to %d: %s missing here (deleted, or moved)", c.maxSeq, l.seq, seqRange(c.maxSeq+1, l.seq-1, "is", "are")))
		case l.seq == c.maxSeq:
			c.problem(ProblemMoved, l.seq, fmt.Sprintf("a second record with seq %d: a copy, or one of the two is forged", l.seq))
		case l.seq < c.maxSeq:
			c.problem(ProblemMoved, l.seq, fmt.Sprintf("comes after seq %d: moved here (reordered), or a copy", c.maxSeq))
		}
	}
	if c.m != nil && prev != nil {
		c.m.mac(prev, l.body, &c.mac)
		if !bytes.Equal(c.mac[:], l.mac) {
			c.problem(ProblemEdited, l.seq, "edited, or forged: its mac does not match the chain (the record before it and its own bytes)")
		}
	}
	c.v.Records++
	c.maxSeq = max(c.maxSeq, l.seq)
	e := &c.recent[c.n%len(c.recent)]
	e.seq = l.seq
	copy(e.mac[:], l.mac)
	c.n++
	first := c.cur.records == 0
	if first {
		c.cur.firstSeq = l.seq
	}
	c.cur.records++
	if hd := c.hd; hd != nil && (l.seq == hd.Seq || l.seq == hd.FileSeq) {
		here := &where{file: c.file, line: c.lineNo, first: first}
		if l.seq == hd.Seq && c.headAt == nil {
			c.headAt, c.headMatch = here, string(l.mac) == hd.MAC
		}
		if l.seq == hd.FileSeq && c.fileSeqAt == nil {
			c.fileSeqAt, c.fileSeqIn = here, len(c.files)-1
		}
	}
	return true
}

// beforeChain counts a line before the chain's first: an older cowork's.
func (c *checker) beforeChain() {
	c.v.Unchained++
	if c.v.Unchained == 1 || c.unchainedAt[len(c.unchainedAt)-1] != c.file {
		c.unchainedAt = append(c.unchainedAt, c.file)
	}
}

// overLong takes a line of n bytes, longer than any the log writes: it
// was not read.
func (c *checker) overLong(n int64) {
	c.lineNo++
	if !c.started {
		c.beforeChain()
		return
	}
	c.flushPending()
	c.problem(ProblemLong, 0, fmt.Sprintf("a line of %d bytes, longer than any the log writes (a record is clipped to %d): added, or lines joined; not read", n, MaxRecord))
}

// flushPending reports the unchained line held back, if any: no record
// after it says that a cut write left it.
func (c *checker) flushPending() {
	if p := c.pending; p != nil {
		c.pending = nil
		c.problemAt(p.file, p.line, ProblemUnchained, 0, "not a chained record: a line cut short, inserted, or stripped of its mac")
	}
}

// resolveCut matches the record l against the unchained line before it:
// a record written after a write that failed part way names the length
// of the line that write left ("cut"), under the key.
func (c *checker) resolveCut(l link) {
	p := c.pending
	c.pending = nil
	if p != nil && p.n == l.cut {
		c.problemAt(p.file, p.line, ProblemCutWrite, 0, fmt.Sprintf("a write cut short (%d bytes; a full disk, or an I/O error), as the record after it says: the record it held (seq %d) is lost, not necessarily by tampering", p.n, l.seq))
		return
	}
	if p != nil {
		c.pending = p
		c.flushPending()
	}
	if l.cut > 0 {
		c.problem(ProblemMissing, l.seq, fmt.Sprintf("a write cut short before this record left a line of %d bytes, which is not here: removed, or changed", l.cut))
	}
}

// recentLine is a chained line the checker saw lately.
type recentLine struct {
	seq int64
	mac [macHex]byte
}

// recentAt is the chained line i lines back (0: the last one).
func (c *checker) recentAt(i int) *recentLine {
	return &c.recent[(c.n-1-i)%len(c.recent)]
}

// find is the mac of seq among the recent lines, or nil.
func (c *checker) find(seq int64) []byte {
	for i := 0; i < min(c.n, len(c.recent)); i++ {
		if e := c.recentAt(i); e.seq == seq {
			return e.mac[:]
		}
	}
	return nil
}

// start takes the first chained line of the log and returns what it
// chains from. Only seq 1 may follow lines without a mac (an older
// cowork's); a log that starts later must start at the first line of the
// oldest file cowork keeps, with the mac of the record rotated away
// before it, else its start was cut.
func (c *checker) start(l link) []byte {
	c.started = true
	c.v.FirstSeq = l.seq
	switch {
	case l.seq == 1:
		if c.v.Unchained > 0 {
			c.note(fmt.Sprintf("%d lines before seq 1 (in %s) were written before cowork chained its log: not checked", c.v.Unchained, joinNames(c.unchainedAt)))
		}
		if l.prev == nil { // the writer names zeroMAC on seq 1: its mac fails
			return zeroMAC[:]
		}
	case c.v.Unchained > 0:
		c.problem(ProblemUnchained, l.seq, fmt.Sprintf("%d lines before it have no mac, yet the chain began before them (this is seq %d): inserted, or older records stripped of their macs", c.v.Unchained, l.seq))
		c.v.Unchained = 0
	case c.index < c.keep:
		c.problem(ProblemCut, l.seq, fmt.Sprintf("the log starts at seq %d, but nothing is rotated away before %s exists: %s removed", l.seq, fileName(c.base, c.keep), seqRange(1, l.seq-1, "was", "were")))
	case l.prev == nil:
		c.problem(ProblemCut, l.seq, "the oldest file's first record does not name the one before it: lines were removed from the start of the file")
	default:
		c.v.RotatedAway = true
		c.note(fmt.Sprintf("starts at seq %d: older records rotated away", l.seq))
	}
	return l.prev
}

// finish checks the log's end against the anchor, and its rotated files,
// and sums up.
func (c *checker) finish(headErr error, headName string, noKey bool) {
	v := c.v
	c.flushPending()
	v.LastSeq = c.maxSeq
	if len(v.Files) > 0 && v.Files[len(v.Files)-1] != c.base {
		c.file, c.lineNo = c.base, 0
		c.problem(ProblemFile, 0, "missing: the file being written is gone, and its records with it")
	}
	notFull := c.checkFull()
	c.file, c.lineNo = headName, 0
	switch {
	case noKey:
	case headErr != nil && !errors.Is(headErr, os.ErrNotExist):
		c.problem(ProblemHead, 0, fmt.Sprintf("altered (%v): records cut from the log's end cannot be told", headErr))
	case headErr != nil:
		c.problem(ProblemHead, 0, "missing: records cut from the log's end cannot be told")
	default:
		hd := c.hd
		v.HeadSeq = hd.Seq
		if hd.Seq > c.maxSeq {
			if len(v.Files) > 0 {
				c.file = v.Files[len(v.Files)-1]
			}
			c.problem(ProblemTruncated, 0, fmt.Sprintf("the log ends at seq %d but %s says %d: %s removed from its end", c.maxSeq, headName, hd.Seq, seqRange(c.maxSeq+1, hd.Seq, "was", "were")))
		}
		c.checkHead(headName, notFull)
	}
	if !c.started && v.Unchained > 0 {
		c.note(fmt.Sprintf("none of its %d lines is chained: an older cowork wrote them; the chain starts with the next record", v.Unchained))
	}
	v.OK = len(v.Problems) == 0
}

// checkFull checks that each rotated file was full when it was rotated:
// rotlog rotates a file only when the next line would take it past
// MaxSize, so a rotated file's size and the length of the next file's
// first line add up to more than MaxSize. A file emptied or cut short
// and then rotated by hand (the files shifted up, as a rotation does, to
// pass records off as rotated away) fails it. When the next file holds no
// whole first line yet, its length is taken as the longest a line can be.
// The files an older cowork wrote, without the chain, are not checked.
// It returns the files it reported.
func (c *checker) checkFull() map[string]bool {
	reported := map[string]bool{}
	longest := maxLineLen(c.maxSize)
	for i := 0; i+1 < len(c.files); i++ {
		a, b := &c.files[i], &c.files[i+1]
		if a.index != b.index+1 {
			continue // a file between them is gone: reported already
		}
		c.file, c.lineNo = a.name, 0
		switch {
		case a.size == 0:
			c.problem(ProblemNotFull, 0, "empty, though a file is rotated only once it is full: made, or emptied, by hand")
		case a.records == 0:
			continue
		case b.firstChained && a.size+b.firstLen <= c.maxSize:
			c.problem(ProblemNotFull, 0, fmt.Sprintf("not full: %d bytes, and the first line of %s (%d bytes) would have fit in %d; a file is rotated only once the next line does not fit, so records were removed from it, or the files were shifted by hand", a.size, b.name, b.firstLen, c.maxSize))
		case !b.firstChained && a.size+longest <= c.maxSize:
			c.problem(ProblemNotFull, 0, fmt.Sprintf("not full: %d bytes of %d, and no line is longer than %d; a file is rotated only once the next line does not fit, so records were removed from it, or the files were shifted by hand", a.size, c.maxSize, longest))
		default:
			continue
		}
		reported[a.name] = true
	}
	return reported
}

// checkHead checks the log against what the anchor says besides its
// seq: the record at that seq must have the anchor's mac (a log and an
// anchor from two copies of the log do not match), and the record the
// newest file began with must still begin a file; when no writer is live
// and no record came after the anchor, that file must still be the
// newest, unless it was full (a rotation at hostd's start).
func (c *checker) checkHead(headName string, notFull map[string]bool) {
	hd := c.hd
	if at := c.headAt; at != nil && !c.headMatch {
		c.file = headName
		c.problem(ProblemHead, 0, fmt.Sprintf("names seq %d with a mac that is not that record's (%s line %d): the log and the anchor are not copies of one log; one of them was replaced", hd.Seq, at.file, at.line))
	}
	at := c.fileSeqAt
	if at == nil || hd.FileSeq > hd.Seq {
		return
	}
	f := &c.files[c.fileSeqIn]
	c.file = f.name
	if !at.first {
		c.problem(ProblemFile, 0, fmt.Sprintf("seq %d began the newest file when %s was written, but it is line %d of %s: files were joined, or lines moved between them", hd.FileSeq, headName, at.line, f.name))
		return
	}
	if c.live || c.fileSeqIn == len(c.files)-1 || f.size >= c.maxSize || notFull[f.name] {
		return
	}
	for _, g := range c.files[c.fileSeqIn+1:] {
		if g.records > 0 {
			return // rotated by the records that came after the anchor
		}
	}
	c.problem(ProblemNotFull, 0, fmt.Sprintf("rotated, though %s names it the newest file (from seq %d), no record came after, and it is not full: the files were shifted by hand", headName, hd.FileSeq))
}

// seqRange names records from..to with the verb that agrees.
func seqRange(from, to int64, one, many string) string {
	if from == to {
		return fmt.Sprintf("record %d %s", from, one)
	}
	return fmt.Sprintf("records %d..%d %s", from, to, many)
}

func joinNames(names []string) string {
	s := names[0]
	for _, n := range names[1:] {
		s += ", " + n
	}
	return s
}
