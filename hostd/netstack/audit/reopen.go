package audit

// Reopening a log: where its chain goes on, and what a crash left.

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
)

// resume finds where the chain goes on (see Open).
func (l *Log) resume(path string) error {
	base := filepath.Base(path)
	if n, err := dropFragment(path); err != nil {
		return err
	} else if n > 0 {
		l.warn("dropped an unfinished line (%d bytes) at the end of %s: hostd stopped while writing it, or the line was cut", n, base)
	}
	found := false
	for i := 0; i <= l.o.Keep && !found; i++ {
		p := path
		if i > 0 {
			p = fmt.Sprintf("%s.%d", path, i)
		}
		var err error
		if l.seq, found, err = tailLink(p, &l.mac); err != nil {
			return err
		}
	}
	hd, err := readHead(l.o.Head, l.key)
	headName := filepath.Base(l.o.Head)
	switch {
	case err == nil && hd.Seq > l.seq:
		l.warn("%s ends at seq %d but %s says %d: records were cut from its end; the next record is seq %d, so that `cowork audit verify` shows the gap", base, l.seq, headName, hd.Seq, hd.Seq+1)
		l.seq = hd.Seq
		copy(l.mac[:], hd.MAC)
	case errors.Is(err, os.ErrNotExist) && found:
		l.warn("%s is missing: made anew at seq %d; records cut from the end of %s before now cannot be told", headName, l.seq, base)
	case err != nil && !errors.Is(err, os.ErrNotExist):
		l.warn("%s: %v; made anew at seq %d; records cut from the end of %s before now cannot be told", headName, err, l.seq, base)
	}
	return nil
}

func (l *Log) warn(format string, args ...any) {
	l.warnings = append(l.warnings, fmt.Sprintf(format, args...))
}

// Warnings are what Open found amiss and went on from, for hostd's log.
func (l *Log) Warnings() []string { return l.warnings }

// dropFragment cuts an unfinished last line off the file at path (one
// without its '\n': hostd stopped in the middle of writing it), so that
// the next record starts a line of its own. It is no record of the chain
// (its mac, if any, was never part of it), and the anchor shows whether
// a whole record was cut. It returns how many bytes went.
func dropFragment(path string) (int64, error) {
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if errors.Is(err, os.ErrNotExist) {
		return 0, nil
	}
	if err != nil {
		return 0, err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil || st.Size() == 0 {
		return 0, err
	}
	end := st.Size()
	buf := make([]byte, 64<<10)
	for off := end; off > 0; {
		n := min(off, int64(len(buf)))
		off -= n
		if _, err := f.ReadAt(buf[:n], off); err != nil {
			return 0, err
		}
		if i := bytes.LastIndexByte(buf[:n], '\n'); i >= 0 {
			keep := off + int64(i) + 1
			if keep == end {
				return 0, nil
			}
			return end - keep, f.Truncate(keep)
		}
	}
	return end, f.Truncate(0)
}

// tailLink reads the last chained line of the file at p into mac and
// returns its seq; found is false when there is none (no file, or only
// lines from before the chain). It reads the file backwards, line by
// line, and parses only the end of each line, where the chain's fields
// are: a line of any length is read right. The file it is found in is
// synced (best effort): the anchor is about to name that record, and the
// hostd that wrote it may have died before the disk had it.
func tailLink(p string, mac *[macHex]byte) (seq int64, found bool, err error) {
	f, err := os.Open(p)
	if errors.Is(err, os.ErrNotExist) {
		return 0, false, nil
	}
	if err != nil {
		return 0, false, err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return 0, false, err
	}
	end := st.Size()
	buf := make([]byte, 64<<10)
	if end > 0 { // the file's last '\n' ends its last line
		if _, err := f.ReadAt(buf[:1], end-1); err != nil {
			return 0, false, err
		}
		if buf[0] == '\n' {
			end--
		}
	}
	// The chunks are read from the end; t holds the end of the line being
	// gathered (its last tailLen bytes at most), right-aligned.
	var t [tailLen]byte
	tn := 0
	gather := func(part []byte) {
		k := min(len(part), tailLen-tn)
		copy(t[tailLen-tn-k:], part[len(part)-k:])
		tn += k
	}
	for pos := end; pos > 0; {
		n := min(pos, int64(len(buf)))
		pos -= n
		chunk := buf[:n]
		if _, err := f.ReadAt(chunk, pos); err != nil {
			return 0, false, err
		}
		for {
			i := bytes.LastIndexByte(chunk, '\n')
			gather(chunk[i+1:])
			if i < 0 && pos > 0 {
				break // the line goes on in the chunk before
			}
			if l, ok := parseLink(t[tailLen-tn:]); ok {
				copy(mac[:], l.mac)
				_ = f.Sync()
				return l.seq, true, nil
			}
			if i < 0 {
				break // the file's first line
			}
			tn, chunk = 0, chunk[:i]
		}
	}
	return 0, false, nil
}

// tailLen is how much of a line's end parseLink needs for its seq and mac.
const tailLen = 512

// firstLink is the seq of the first chained line of the file at p (0 and
// false for none: no file, an empty one, or only lines from before the
// chain). Only the end of each line is kept, as in tailLink.
func firstLink(p string) (seq int64, found bool, err error) {
	f, err := os.Open(p)
	if errors.Is(err, os.ErrNotExist) {
		return 0, false, nil
	}
	if err != nil {
		return 0, false, err
	}
	defer f.Close()
	r := bufio.NewReaderSize(f, 64<<10)
	var tail []byte
	for {
		part, err := r.ReadSlice('\n')
		if errors.Is(err, bufio.ErrBufferFull) {
			tail = append(tail, part[max(0, len(part)-tailLen):]...)
			tail = tail[max(0, len(tail)-tailLen):]
			continue
		}
		if err == io.EOF {
			return 0, false, nil // an unfinished last line is no record yet
		}
		if err != nil {
			return 0, false, err
		}
		line := append(tail, part[:len(part)-1]...)
		if l, ok := parseLink(line[max(0, len(line)-tailLen):]); ok {
			return l.seq, true, nil
		}
		tail = tail[:0]
	}
}
