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
// run of broken macs after it.
func (c *checker) line(b []byte) {
	c.lineNo++
	l, ok := parseLink(b)
	if !ok {
		if !c.started {
			c.v.Unchained++
			if c.v.Unchained == 1 || c.unchainedAt[len(c.unchainedAt)-1] != c.file {
				c.unchainedAt = append(c.unchainedAt, c.file)
			}
			return
		}
		c.problem(ProblemUnchained, 0, "not a chained record: a line cut short, inserted, or stripped of its mac")
		return
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

// finish checks the log's end against the anchor and sums up.
func (c *checker) finish(hd *head, headErr error, headName string, noKey bool) {
	v := c.v
	v.LastSeq = c.maxSeq
	if len(v.Files) > 0 && v.Files[len(v.Files)-1] != c.base {
		c.file, c.lineNo = c.base, 0
		c.problem(ProblemFile, 0, "missing: the file being written is gone, and its records with it")
	}
	c.file, c.lineNo = headName, 0
	switch {
	case noKey:
	case headErr != nil && !errors.Is(headErr, os.ErrNotExist):
		c.problem(ProblemHead, 0, fmt.Sprintf("altered (%v): records cut from the log's end cannot be told", headErr))
	case headErr != nil:
		c.problem(ProblemHead, 0, "missing: records cut from the log's end cannot be told")
	default:
		v.HeadSeq = hd.Seq
		if hd.Seq > c.maxSeq {
			if len(v.Files) > 0 {
				c.file = v.Files[len(v.Files)-1]
			}
			c.problem(ProblemTruncated, 0, fmt.Sprintf("the log ends at seq %d but %s says %d: %s removed from its end", c.maxSeq, headName, hd.Seq, seqRange(c.maxSeq+1, hd.Seq, "was", "were")))
		}
	}
	if !c.started && v.Unchained > 0 {
		c.note(fmt.Sprintf("none of its %d lines is chained: an older cowork wrote them; the chain starts with the next record", v.Unchained))
	}
	v.OK = len(v.Problems) == 0
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
