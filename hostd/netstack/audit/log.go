package audit

import (
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
	// Live tells Verify that a writer may be appending to the log as it
	// reads (the instance runs): an unfinished last line is then left
	// out, as one being written; without a writer it is a problem. Open
	// ignores it.
	Live bool
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

// MaxRecord bounds a record's JSON in the log: a record over it (a guest
// can make a URL, a Host or a claimed name long) is written with its long
// strings clipped, and "clipped":true (see clipRecord). With the chain's
// fields a line is then never longer than MaxRecord+chainMax bytes, which
// verify and Open rely on; a line longer than that was not written by the
// log. A log whose files are smaller (MaxSize) clips its records to fit
// a file, so that no line is split across two.
const MaxRecord = 64 << 10

// recordBound is the most bytes of JSON a record takes in a log of files
// of maxSize bytes: MaxRecord, or less so that a line fits a file. A
// record clipped as far as clipRecord goes (strings of 16 bytes) is a few
// KiB at most, far under MaxRecord; in files of a few KiB (tests) such a
// record may still not fit: rotlog then splits its line, and verify
// reports it.
func recordBound(maxSize int64) int {
	return int(max(min(MaxRecord, maxSize-int64(chainMax)), minRecord))
}

const minRecord = 256

// maxLineLen is the longest line a log of files of maxSize bytes holds.
func maxLineLen(maxSize int64) int64 { return int64(recordBound(maxSize) + chainMax) }

// Log appends records to a file, each chained to the one before (see
// chain.go), rotating it when it grows past MaxSize: path becomes path.1,
// path.1 path.2, and so on up to Keep files. The file is an
// internal/rotlog.File, as hostd's other guest-fed logs: a record that
// would take it past MaxSize starts the next file, so a line is split
// only when it alone is longer than MaxSize.
//
// The anchor is written on Close and within headEvery of a write (a
// timer, so a write never waits for the disk), each time after the log's
// files are synced: it never names a record the disk may lack after a
// power cut. A log cut short before its anchor's record shows. What was
// written after the anchor's last update can be cut unseen if hostd dies
// without closing the log.
type Log struct {
	o         Options
	key       []byte
	headEvery time.Duration
	maxRec    int          // recordBound(o.MaxSize)
	sync      func() error // commits the files to disk (the rotlog's Sync; tests wrap it)

	mu      sync.Mutex // orders the records and guards what follows
	f       *rotlog.File
	stats   Stats
	m       *macer
	buf     []byte       // the line being written
	seq     int64        // the last record written, 0 for none
	mac     [macHex]byte // its mac; zeroMAC for none
	fileSeq int64        // the first record (written, or cut) in the current file; 0 for none
	cutLen  int64        // a write stopped part way, leaving this many bytes: the next record says so ("cut")
	cutEnd  bool         // the line it left is ended (endCut)
	timer   *time.Timer  // set while the anchor lags
	closed  bool

	headMu   sync.Mutex // orders the anchor's writes, each with the sync before it
	headSeq  int64      // the seq the anchor holds
	headDone bool       // Close wrote the last anchor: none may follow

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
	l := &Log{o: o, key: key, headEvery: headEvery, maxRec: recordBound(o.MaxSize), m: newMacer(key), mac: zeroMAC}
	if err := l.resume(path); err != nil {
		return nil, fmt.Errorf("audit log: %w", err)
	}
	f, err := rotlog.Open(path, rotlog.Options{MaxSize: o.MaxSize, Keep: o.Keep, SyncRotated: true, RotationLock: RotationLock(path)})
	if err != nil {
		return nil, fmt.Errorf("audit log: %w", err)
	}
	l.f, l.sync = f, f.Sync
	if l.fileSeq, _, err = firstLink(path); err != nil {
		f.Close()
		return nil, fmt.Errorf("audit log: %w", err)
	}
	if err := l.sync(); err != nil {
		l.warn("sync %s: %v; %s is left as it was", filepath.Base(path), err, filepath.Base(o.Head))
	} else if err := l.writeHead(l.headNow()); err != nil {
		f.Close()
		return nil, fmt.Errorf("audit log: write its anchor %s: %w", o.Head, err)
	}
	return l, nil
}

// Write appends one record. The log is best effort: a write error is
// returned for the caller to report, and the traffic goes on. A record
// whose JSON is longer than MaxRecord is written clipped (clipRecord).
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
	if len(b) > l.maxRec {
		if b, err = clipRecord(rec, l.maxRec); err != nil {
			return err
		}
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
	line, mac, first, err := l.seal(b)
	if err != nil {
		return err
	}
	n, err := l.f.Write(line)
	if first { // the record began a file, whole or cut; none when nothing went
		l.fileSeq = 0
		if n > 0 {
			l.fileSeq = l.seq + 1
		}
	}
	if err != nil {
		if n > 0 {
			l.cutLen, l.cutEnd = int64(n), false
		}
		return err
	}
	l.seq++
	l.mac = mac
	l.cutLen, l.cutEnd = 0, false
	if l.timer == nil {
		l.timer = time.AfterFunc(l.headEvery, l.flushHead)
	}
	return nil
}

// seal makes the line of the next record from body (its JSON without the
// closing brace): the chain's fields, the brace and the '\n' appended.
// It returns the line, its mac, and whether it begins a file.
func (l *Log) seal(body []byte) ([]byte, [macHex]byte, bool, error) {
	var mac [macHex]byte
	seq := l.seq + 1
	n := len(body) + len(seqField) + digits(seq) + macTail + 1
	if seq == 1 {
		n += prevLen // seq 1 names the mac before it wherever it is
	}
	if l.cutLen > 0 {
		n += len(cutField) + digits(l.cutLen)
	}
	first, err := l.f.StartsFile(n)
	if err != nil {
		return nil, mac, false, err
	}
	// The line is made in the log's own buffer (the write is done with it
	// before the lock goes): appending the chain's fields to the JSON
	// would grow a new slice for every record.
	body = append(l.buf[:0], body...)
	defer func() { l.buf = body[:0] }()
	if l.cutLen > 0 {
		body = append(body, cutField...)
		body = strconv.AppendInt(body, l.cutLen, 10)
	}
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
	return body, mac, first, nil
}

// endCut ends the line a write left unfinished, so that the next record
// starts a line of its own; when that line ended a full file, the next
// record starts the next file anyway. That record then names the line's
// length ("cut").
func (l *Log) endCut() error {
	if l.cutLen == 0 || l.cutEnd {
		return nil
	}
	first, err := l.f.StartsFile(1)
	if err != nil {
		return err
	}
	if !first {
		if _, err := l.f.Write([]byte{'\n'}); err != nil {
			return err
		}
	}
	l.cutEnd = true
	return nil
}

func digits(n int64) int {
	d := 1
	for ; n >= 10; n /= 10 {
		d++
	}
	return d
}

// headNow is the anchor for what was written so far; under l.mu.
func (l *Log) headNow() head {
	h := head{Seq: l.seq, MAC: string(l.mac[:]), FileSeq: l.fileSeq, MaxSize: l.o.MaxSize, Keep: l.o.Keep}
	if h.FileSeq == 0 {
		h.FileSeq = l.seq + 1
	}
	return h
}

// flushHead brings the anchor up to the last record (the timer's, so at
// most once per headEvery): the files are synced first, so that it never
// names a record the disk may lack. A failed sync leaves the anchor as it
// was until the next write's timer, or Close.
func (l *Log) flushHead() {
	l.mu.Lock()
	l.timer = nil
	h, closed := l.headNow(), l.closed
	l.mu.Unlock()
	if closed {
		return
	}
	l.headMu.Lock()
	defer l.headMu.Unlock()
	if err := l.sync(); err == nil {
		_ = l.writeHeadLocked(h) // best effort: Close writes it again
	}
}

// writeHead sets the anchor to h, unless it holds a later record already.
func (l *Log) writeHead(h head) error {
	l.headMu.Lock()
	defer l.headMu.Unlock()
	return l.writeHeadLocked(h)
}

func (l *Log) writeHeadLocked(h head) error {
	if h.Seq < l.headSeq || l.headDone {
		return nil
	}
	if err := writeHead(l.o.Head, l.key, h); err != nil {
		return err
	}
	l.headSeq = h.Seq
	return nil
}

func (l *Log) count(r *Record) { l.stats.Add(r) }

// Stats is what was recorded so far.
func (l *Log) Stats() Stats {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.stats
}

// Close ends the log, syncs its files and brings its anchor up to its
// last record; writes fail after it (os.ErrClosed). When the sync fails,
// the anchor is left as it was: it must not name records the disk may
// lack.
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
	h := l.headNow()
	serr := l.sync()
	err := l.f.Close()
	l.mu.Unlock()
	l.headMu.Lock() // after a flushHead under way, if any; none after this
	defer l.headMu.Unlock()
	if serr != nil {
		l.headDone = true
		return fmt.Errorf("audit log: sync it (its anchor is left as it was): %w", serr)
	}
	herr := l.writeHeadLocked(h)
	l.headDone = true
	if err == nil && herr != nil {
		err = fmt.Errorf("audit log: write its anchor %s: %w", l.o.Head, herr)
	}
	return err
}
