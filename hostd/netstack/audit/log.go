package audit

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"time"

	"github.com/coworkhq/cowork/internal/rotlog"
)

// Options say where a log's chain keeps its key and anchor, and how the
// log rotates.
type Options struct {
	// MaxSize is the most bytes one file holds (DefaultMaxSize when 0);
	// Keep how many rotated files are kept (DefaultKeep when 0).
	MaxSize int64
	Keep    int
	// Key is the file of the chain's key, made (0600) when missing. It
	// must stay on the host: whoever holds it can rewrite the log unseen.
	Key string
	// Head is the file of the chain's anchor (see head), 0600.
	Head string
}

// Defaults for Options.
const (
	DefaultMaxSize = 32 << 20
	DefaultKeep    = 3
)

func (o Options) withDefaults() (Options, error) {
	if o.MaxSize <= 0 {
		o.MaxSize = DefaultMaxSize
	}
	if o.Keep <= 0 {
		o.Keep = DefaultKeep
	}
	if o.Key == "" || o.Head == "" {
		return o, errors.New("audit log: the chain's key and anchor files must be named")
	}
	return o, nil
}

// headEvery is how long the anchor may lag the log while records come.
const headEvery = time.Second

// Log appends records to a file, each chained to the one before (see
// chain.go), rotating it when it grows past MaxSize: path becomes path.1,
// path.1 path.2, and so on up to Keep files. The file is an
// internal/rotlog.File, as hostd's other guest-fed logs: a record that
// would take it past MaxSize starts the next file, so a line is split
// only when it alone is longer than MaxSize.
//
// The anchor is written on Close and within headEvery of a write (a
// timer, so a write never waits for the disk's sync): a log cut short
// before its anchor's record shows. What was written after the anchor's
// last update can be cut unseen if hostd dies without closing the log.
type Log struct {
	o         Options
	key       []byte
	headEvery time.Duration

	mu     sync.Mutex // orders the records and guards what follows
	f      *rotlog.File
	stats  Stats
	m      *macer
	buf    []byte       // the line being written
	seq    int64        // the last record written, 0 for none
	mac    [macHex]byte // its mac; zeroMAC for none
	cut    bool         // a write stopped part way: endCut ends its line
	timer  *time.Timer  // set while the anchor lags
	closed bool

	headMu  sync.Mutex // orders the anchor's writes
	headSeq int64      // the seq the anchor holds

	warnings []string
}

// Open appends to the log at path (rotating first when it is full
// already), going on with its chain: the next record's seq and mac follow
// the last chained line of the newest file that has one, or the anchor
// when it is further on (records were cut from the log's end while no
// one wrote it: the gap stays in the chain, for verify to report). It
// makes the key when there is none, and writes the anchor at once.
func Open(path string, o Options) (*Log, error) {
	o, err := o.withDefaults()
	if err != nil {
		return nil, err
	}
	key, err := loadOrMakeKey(o.Key)
	if err != nil {
		return nil, fmt.Errorf("audit log: %w", err)
	}
	l := &Log{o: o, key: key, headEvery: headEvery, m: newMacer(key), mac: zeroMAC}
	if err := l.resume(path); err != nil {
		return nil, fmt.Errorf("audit log: %w", err)
	}
	f, err := rotlog.Open(path, rotlog.Options{MaxSize: o.MaxSize, Keep: o.Keep})
	if err != nil {
		return nil, fmt.Errorf("audit log: %w", err)
	}
	l.f = f
	if err := l.writeHead(l.seq, l.mac); err != nil {
		f.Close()
		return nil, fmt.Errorf("audit log: write its anchor %s: %w", o.Head, err)
	}
	return l, nil
}

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

// tailLink reads the last chained line in the last 2 MiB of the file at
// p into mac and returns its seq; found is false when there is none (no
// file, or only lines from before the chain).
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
	off := max(0, st.Size()-2*maxLine)
	buf := make([]byte, st.Size()-off)
	if _, err := f.ReadAt(buf, off); err != nil {
		return 0, false, err
	}
	if off > 0 { // the first line is likely a part
		buf = buf[bytes.IndexByte(buf, '\n')+1:]
	}
	for len(buf) > 0 {
		buf = bytes.TrimSuffix(buf, []byte("\n"))
		i := bytes.LastIndexByte(buf, '\n')
		if l, ok := parseLink(buf[i+1:]); ok {
			copy(mac[:], l.mac)
			return l.seq, true, nil
		}
		buf = buf[:max(i, 0)]
	}
	return 0, false, nil
}

// Write appends one record. The log is best effort: a write error is
// returned for the caller to report, and the traffic goes on.
func (l *Log) Write(r *Record) error {
	if r.Time.IsZero() {
		r.Time = time.Now()
	}
	rec := r
	if r.Seq != 0 { // the log numbers its records itself
		c := *r
		c.Seq = 0
		rec = &c
	}
	b, err := json.Marshal(rec)
	if err != nil {
		return err
	}
	b = b[:len(b)-1] // the closing brace: the chain's fields go before it
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return os.ErrClosed
	}
	l.count(r)
	if err := l.endCut(); err != nil {
		return err
	}
	line, mac, err := l.seal(b)
	if err != nil {
		return err
	}
	if n, err := l.f.Write(line); err != nil {
		l.cut = n > 0
		return err
	}
	l.seq++
	l.mac = mac
	if l.timer == nil {
		l.timer = time.AfterFunc(l.headEvery, l.flushHead)
	}
	return nil
}

// seal makes the line of the next record from body (its JSON without the
// closing brace): the chain's fields, the brace and the '\n' appended.
// It returns the line and its mac.
func (l *Log) seal(body []byte) ([]byte, [macHex]byte, error) {
	var mac [macHex]byte
	seq := l.seq + 1
	n := len(body) + len(seqField) + digits(seq) + macTail + 1
	first, err := l.f.StartsFile(n)
	if err != nil {
		return nil, mac, err
	}
	// The line is made in the log's own buffer (the write is done with it
	// before the lock goes): appending the chain's fields to the JSON
	// would grow a new slice for every record.
	body = append(l.buf[:0], body...)
	defer func() { l.buf = body[:0] }()
	if first || seq == 1 {
		body = append(body, prevField...)
		body = append(body, l.mac[:]...)
		body = append(body, '"')
	}
	body = append(body, seqField...)
	body = strconv.AppendInt(body, seq, 10)
	l.m.mac(l.mac[:], body, &mac)
	body = append(body, macField...)
	body = append(body, mac[:]...)
	body = append(body, "\"}\n"...)
	return body, mac, nil
}

// endCut ends the line a write left unfinished, so that the next record
// starts a line of its own; when that line ended a full file, the next
// record starts the next file anyway.
func (l *Log) endCut() error {
	if !l.cut {
		return nil
	}
	if first, err := l.f.StartsFile(1); err != nil || first {
		l.cut = err != nil
		return err
	}
	if _, err := l.f.Write([]byte{'\n'}); err != nil {
		return err
	}
	l.cut = false
	return nil
}

func digits(n int64) int {
	d := 1
	for ; n >= 10; n /= 10 {
		d++
	}
	return d
}

// flushHead brings the anchor up to the last record (the timer's).
func (l *Log) flushHead() {
	l.mu.Lock()
	l.timer = nil
	seq, mac, closed := l.seq, l.mac, l.closed
	l.mu.Unlock()
	if !closed {
		_ = l.writeHead(seq, mac) // best effort: Close writes it again
	}
}

// writeHead sets the anchor to seq, unless it holds a later one already.
func (l *Log) writeHead(seq int64, mac [macHex]byte) error {
	l.headMu.Lock()
	defer l.headMu.Unlock()
	if seq < l.headSeq {
		return nil
	}
	if err := writeHead(l.o.Head, l.key, seq, mac[:]); err != nil {
		return err
	}
	l.headSeq = seq
	return nil
}

func (l *Log) count(r *Record) { l.stats.Add(r) }

// Stats is what was recorded so far.
func (l *Log) Stats() Stats {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.stats
}

// Close ends the log and brings its anchor up to its last record; writes
// fail after it (os.ErrClosed).
func (l *Log) Close() error {
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		return nil
	}
	l.closed = true
	if l.timer != nil {
		l.timer.Stop()
		l.timer = nil
	}
	seq, mac := l.seq, l.mac
	err := l.f.Close()
	l.mu.Unlock()
	if herr := l.writeHead(seq, mac); err == nil && herr != nil {
		err = fmt.Errorf("audit log: write its anchor %s: %w", l.o.Head, herr)
	}
	return err
}
