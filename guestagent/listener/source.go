package listener

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/coworkhq/cowork/internal/agentcall"
	"github.com/coworkhq/cowork/internal/agentwire"
	"github.com/coworkhq/cowork/internal/execwire"
)

// maxSource bounds one source channel's length.
const maxSource = 64 << 30

// WithByteSource wraps l so that channels opening with
// agentwire.SourcePreface (make bench's measure of the bare transport) are
// answered here: only ever zeros, and nothing else is read. Every other
// channel reaches the caller's Accept with its first bytes intact. A channel that sends too little to tell within
// sniffTimeout is closed.
func WithByteSource(l net.Listener, log *slog.Logger) net.Listener {
	return newSniffer(l, log, sniffTimeout, Handlers{})
}

// Handlers serve the channels a sniffer tells apart by their preface.
// Each is called with the preface read, in the goroutine that read it (so
// that the first exec on a channel waits for no other); nil leaves those
// channels to Accept.
type Handlers struct {
	Exec func(net.Conn) // execwire.Preface
	Call func(net.Conn) // agentcall.Preface
}

// Sniff is WithByteSource that also hands the channels of h's kinds to h.
func Sniff(l net.Listener, log *slog.Logger, h Handlers) net.Listener {
	return newSniffer(l, log, sniffTimeout, h)
}

// The prefaces are one length, so that one read of it tells them apart.
var (
	_ [len(agentwire.SourcePreface) - len(execwire.Preface)]struct{}
	_ [len(execwire.Preface) - len(agentwire.SourcePreface)]struct{}
	_ [len(agentcall.Preface) - len(execwire.Preface)]struct{}
	_ [len(execwire.Preface) - len(agentcall.Preface)]struct{}
)

func newSniffer(l net.Listener, log *slog.Logger, timeout time.Duration, h Handlers) *sniffer {
	s := &sniffer{Listener: l, log: log, conns: make(chan net.Conn), done: make(chan struct{}), timeout: timeout, h: h}
	go s.run()
	return s
}

// sniffTimeout is how long a new channel may take to send its first bytes.
// The host's clients send their 14-byte preface at once.
const sniffTimeout = 30 * time.Second

type sniffer struct {
	net.Listener
	log     *slog.Logger
	conns   chan net.Conn
	timeout time.Duration
	h       Handlers

	once sync.Once
	done chan struct{}
	err  error
}

func (s *sniffer) run() {
	for {
		c, err := s.Listener.Accept()
		if err != nil {
			// Out of file descriptors and the like pass: they are waited
			// out; anything else ends serving.
			if t, ok := err.(interface{ Temporary() bool }); ok && t.Temporary() {
				s.log.Warn("accept a channel", "err", err)
				select {
				case <-s.done:
					return
				case <-time.After(50 * time.Millisecond):
				}
				continue
			}
			s.stop(err)
			return
		}
		go s.sniff(c)
	}
}

func (s *sniffer) stop(err error) {
	s.once.Do(func() {
		s.err = err
		close(s.done)
	})
}

func (s *sniffer) sniff(c net.Conn) {
	head := make([]byte, len(agentwire.SourcePreface))
	c.SetReadDeadline(time.Now().Add(s.timeout))
	n, err := io.ReadFull(c, head)
	if err != nil {
		if n > 0 {
			s.log.Warn("closing a channel that sent too little to serve", "bytes", n, "err", err)
		}
		c.Close()
		return
	}
	if string(head) == agentwire.SourcePreface {
		s.source(c)
		return
	}
	c.SetReadDeadline(time.Time{})
	switch {
	case string(head) == execwire.Preface && s.h.Exec != nil:
		s.h.Exec(c)
		return
	case string(head) == agentcall.Preface && s.h.Call != nil:
		s.h.Call(c)
		return
	}
	select {
	case s.conns <- &prefixedConn{Conn: c, head: head}:
	case <-s.done:
		c.Close()
	}
}

// source answers one agentwire.SourcePreface channel.
func (s *sniffer) source(c net.Conn) {
	defer c.Close()
	line, err := bufio.NewReader(io.LimitReader(c, 32)).ReadString('\n')
	n, perr := strconv.ParseInt(strings.TrimSpace(line), 10, 64)
	if err != nil || perr != nil || n < 0 || n > maxSource {
		fmt.Fprintf(c, "want %sBYTES\\n with BYTES from 0 to %d\n", agentwire.SourcePreface, int64(maxSource))
		return
	}
	c.SetReadDeadline(time.Time{})
	buf := make([]byte, 256<<10)
	for n > 0 {
		w, err := c.Write(buf[:min(n, int64(len(buf)))])
		if err != nil {
			return
		}
		n -= int64(w)
	}
}

func (s *sniffer) Accept() (net.Conn, error) {
	select {
	case c := <-s.conns:
		return c, nil
	case <-s.done:
		return nil, s.err
	}
}

func (s *sniffer) Close() error {
	s.stop(net.ErrClosed)
	err := s.Listener.Close()
	if errors.Is(err, net.ErrClosed) {
		return nil
	}
	return err
}

// prefixedConn gives back the bytes the sniffer read before handing the
// channel on.
type prefixedConn struct {
	net.Conn
	head []byte
}

func (c *prefixedConn) Read(p []byte) (int, error) {
	if len(c.head) > 0 {
		n := copy(p, c.head)
		c.head = c.head[n:]
		return n, nil
	}
	return c.Conn.Read(p)
}
