// Package console is the guest's serial console on the host. The VM
// writes the console into a pipe (machine.Config.Console) that hostd
// drains into serial.log, a size-capped, rotated log (internal/rotlog), so
// a guest printing forever costs a bounded amount of disk.
//
// The guest is never held up by the disk: the pipe is read at once into a
// buffer of fixed size, which the log's writer empties in batches (QEMU
// writes the console a byte at a time, and a write per byte could not keep
// up); when the writer falls so far behind that the buffer is full, what
// the guest prints meanwhile is dropped and counted (a line in the log
// says how much) rather than left in the pipe, where it would stall the
// guest's console and with it the guest's kernel. Memory is bounded by
// the buffer, whatever the guest does.
//
// The console's last bytes are also kept in memory for the stop reason (a
// kernel panic), and the first byte is announced (the boot's kernel phase),
// so nothing has to read the log back.
package console

import (
	"fmt"
	"io"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/coworkhq/cowork/internal/rotlog"
)

// Defaults for serial.log: 4 MiB a file, the current one and two more.
const (
	DefaultMaxSize = 4 << 20
	DefaultKeep    = 2
)

// Sizes of the drain: the reader's buffer, the most bytes waiting for
// the log (twice that while the writer writes a batch), and the console's
// last bytes kept in memory.
const (
	readSize   = 32 << 10
	maxPending = 1 << 20
	TailSize   = 64 << 10
)

// Console is the host's end of a guest console.
type Console struct {
	// W is the pipe's write end, for the VM: QEMU inherits it, vz writes
	// to a duplicate. Close hostd's own copy (CloseWriter) once the VM has
	// started, so that the VM's exit ends the drain.
	W *os.File

	r   *os.File
	log io.WriteCloser

	wake    chan struct{} // the reader added bytes, or ended
	started chan struct{}
	done    chan struct{}

	dropped atomic.Int64 // bytes the guest printed that the log never got
	unsaid  atomic.Int64 // of those, not yet reported in the log

	mu      sync.Mutex
	pending []byte // read, not yet taken by the writer; at most maxPending
	eof     bool   // the reader has ended
	tail    []byte // the last TailSize bytes read

	closeW, closeOnce sync.Once
}

// Open makes a console whose output goes to the rotated log at path: a
// fresh file for this boot, the last boot's kept as path.1.
func Open(path string) (*Console, error) {
	log, err := rotlog.Open(path, rotlog.Options{MaxSize: DefaultMaxSize, Keep: DefaultKeep, Fresh: true})
	if err != nil {
		return nil, err
	}
	c, err := New(log)
	if err != nil {
		log.Close()
		return nil, err
	}
	return c, nil
}

// New makes a console whose output goes to log, and starts draining it.
func New(log io.WriteCloser) (*Console, error) {
	r, w, err := os.Pipe()
	if err != nil {
		return nil, fmt.Errorf("console pipe: %w", err)
	}
	c := &Console{
		W: w, r: r, log: log,
		wake:    make(chan struct{}, 1),
		started: make(chan struct{}),
		done:    make(chan struct{}),
		pending: make([]byte, 0, maxPending),
	}
	go c.read()
	go c.write()
	return c, nil
}

// read drains the pipe as fast as it fills, into pending while it has
// room; the rest is dropped.
func (c *Console) read() {
	buf := make([]byte, readSize)
	first := true
	for {
		n, err := c.r.Read(buf)
		if n > 0 {
			if first {
				first = false
				close(c.started)
			}
			c.push(buf[:n])
		}
		if err != nil {
			c.mu.Lock()
			c.eof = true
			c.mu.Unlock()
			c.signal()
			return
		}
	}
}

func (c *Console) push(p []byte) {
	c.mu.Lock()
	c.keepTailLocked(p)
	k := min(len(p), maxPending-len(c.pending))
	c.pending = append(c.pending, p[:k]...)
	c.mu.Unlock()
	if lost := int64(len(p) - k); lost > 0 {
		c.dropped.Add(lost)
		c.unsaid.Add(lost)
	}
	c.signal()
}

func (c *Console) signal() {
	select {
	case c.wake <- struct{}{}:
	default: // the writer has a wake-up coming already
	}
}

// write takes what the reader gathered, all of it at once, to the log,
// and says in it what was dropped.
func (c *Console) write() {
	defer close(c.done)
	defer c.log.Close()
	spare := make([]byte, 0, maxPending)
	for {
		c.mu.Lock()
		for len(c.pending) == 0 && !c.eof {
			c.mu.Unlock()
			<-c.wake
			c.mu.Lock()
		}
		batch, eof := c.pending, c.eof
		c.pending = spare[:0]
		c.mu.Unlock()
		_, _ = c.log.Write(batch) // the log is best effort, like the console
		c.reportDropped()
		if eof && len(batch) == 0 {
			return
		}
		spare = batch
	}
}

func (c *Console) reportDropped() {
	if n := c.unsaid.Swap(0); n > 0 {
		fmt.Fprintf(c.log, "\r\n[cowork: %d bytes of console output dropped: the guest printed faster than serial.log could be written]\r\n", n)
	}
}

func (c *Console) keepTailLocked(p []byte) {
	if len(p) >= TailSize {
		c.tail = append(c.tail[:0], p[len(p)-TailSize:]...)
		return
	}
	if over := len(c.tail) + len(p) - TailSize; over > 0 {
		c.tail = append(c.tail[:0], c.tail[over:]...)
	}
	c.tail = append(c.tail, p...)
}

// Started is closed when the guest prints its first byte.
func (c *Console) Started() <-chan struct{} { return c.started }

// Tail is a copy of the console's last TailSize bytes (dropped ones too).
func (c *Console) Tail() []byte {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]byte(nil), c.tail...)
}

// Dropped is how many bytes the guest printed that the log did not get.
func (c *Console) Dropped() int64 { return c.dropped.Load() }

// CloseWriter closes hostd's copy of W; the VM keeps its own.
func (c *Console) CloseWriter() {
	c.closeW.Do(func() { c.W.Close() })
}

// Close ends the console: it waits up to wait for the VM's end of the pipe
// to close (the VM stopped; what it printed last is then in the log and
// the tail), stops reading after that, and waits up to wait again for the
// log to be written.
func (c *Console) Close(wait time.Duration) {
	c.CloseWriter()
	c.closeOnce.Do(func() {
		select {
		case <-c.done:
		case <-time.After(wait):
			_ = c.r.SetReadDeadline(time.Now()) // a writer that lingers
			select {
			case <-c.done:
			case <-time.After(wait):
			}
		}
		c.r.Close()
	})
}
