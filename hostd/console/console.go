// Package console is the guest's serial console on the host. The VM
// writes the console into a pipe (machine.Config.Console) that hostd
// drains into serial.log, a size-capped, rotated log (internal/rotlog), so
// a guest printing forever costs a bounded amount of disk.
//
// The guest is never held up by the disk: the pipe is read at once into a
// fixed set of buffers, and when the log's writer falls behind so far that
// none is free, what the guest prints meanwhile is dropped and counted (a
// line in the log says how much) rather than left in the pipe, where it
// would stall the guest's console and with it the guest's kernel. Memory
// is bounded by the buffers, whatever the guest does.
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

// Sizes of the drain: buffers of bufSize bytes, at most bufCount of them
// waiting for the log at once (2 MiB), and the console's last TailSize
// bytes kept in memory.
const (
	bufSize  = 32 << 10
	bufCount = 64
	TailSize = 64 << 10
)

// Console is the host's end of a guest console.
type Console struct {
	// W is the pipe's write end, for the VM: QEMU inherits it, vz writes
	// to a duplicate. Close hostd's own copy (CloseWriter) once the VM has
	// started, so that the VM's exit ends the drain.
	W *os.File

	r   *os.File
	log io.WriteCloser

	free    chan []byte
	full    chan []byte
	started chan struct{}
	done    chan struct{}

	dropped atomic.Int64 // bytes the guest printed that the log never got
	pending atomic.Int64 // of those, not yet reported in the log

	mu   sync.Mutex
	tail []byte // the last TailSize bytes read

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
		free:    make(chan []byte, bufCount),
		full:    make(chan []byte, bufCount),
		started: make(chan struct{}),
		done:    make(chan struct{}),
	}
	for range bufCount {
		c.free <- make([]byte, bufSize)
	}
	go c.read()
	go c.write()
	return c, nil
}

// read drains the pipe as fast as it fills, into a free buffer when there
// is one and else into a scratch buffer whose bytes are dropped.
func (c *Console) read() {
	defer close(c.full)
	scratch := make([]byte, bufSize)
	first := true
	for {
		buf, pooled := scratch, false
		select {
		case buf = <-c.free:
			pooled = true
		default:
		}
		n, err := c.r.Read(buf)
		if n > 0 {
			if first {
				first = false
				close(c.started)
			}
			c.keepTail(buf[:n])
		}
		switch {
		case pooled && n > 0:
			c.full <- buf[:n] // never blocks: it has room for every buffer
		case pooled:
			c.free <- buf
		default:
			c.dropped.Add(int64(n))
			c.pending.Add(int64(n))
		}
		if err != nil {
			return
		}
	}
}

// write moves filled buffers to the log, and says in it what was dropped.
func (c *Console) write() {
	defer close(c.done)
	defer c.log.Close()
	for buf := range c.full {
		c.reportDropped()
		_, _ = c.log.Write(buf) // the log is best effort, like the console
		c.free <- buf[:cap(buf)]
	}
	c.reportDropped()
}

func (c *Console) reportDropped() {
	if n := c.pending.Swap(0); n > 0 {
		fmt.Fprintf(c.log, "\r\n[cowork: %d bytes of console output dropped: the guest printed faster than serial.log could be written]\r\n", n)
	}
}

func (c *Console) keepTail(p []byte) {
	c.mu.Lock()
	defer c.mu.Unlock()
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
