package netstack

import (
	"io"
	"net"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/coworkhq/cowork/hostd/netstack/audit"
)

// idleSet is the TCP flows watched for idleness: each notes when a byte
// last went through it either way, and the limiter's ticker closes those
// quiet for longer than the timeout. A flow the guest forgot (it rebooted,
// or dropped the connection without a word) would otherwise hold its host
// socket for as long as hostd lives.
//
// A flow closed one way (a FIN from either side) gets halfClosedIdle at
// most: a guest program that exits sends FIN and forgets its connections,
// and a server that neither answers nor closes would keep each for the
// full timeout. Linux's connection tracking does the same (its FIN_WAIT
// timeout is two minutes).
type idleSet struct {
	timeout time.Duration
	now     func() time.Time

	mu    sync.Mutex
	conns map[*trackedConn]struct{}
}

// halfClosedIdle is the idle timeout of a flow closed one way.
const halfClosedIdle = 2 * time.Minute

func newIdleSet(timeout time.Duration, now func() time.Time) *idleSet {
	return &idleSet{timeout: timeout, now: now, conns: map[*trackedConn]struct{}{}}
}

// watch returns c watched for idleness; when it goes idle, c and also are
// closed. A c already watched (a gateway connection, say, that became a
// CONNECT tunnel) is watched once, closing also with it from now on.
func (s *idleSet) watch(c net.Conn, also io.Closer) net.Conn {
	if tc, ok := c.(*trackedConn); ok && tc.idle == s {
		s.mu.Lock()
		tc.also = also
		s.mu.Unlock()
		return tc
	}
	tc := &trackedConn{Conn: c, idle: s, also: also}
	s.add(tc)
	return tc
}

func (s *idleSet) add(tc *trackedConn) {
	tc.touch()
	s.mu.Lock()
	s.conns[tc] = struct{}{}
	s.mu.Unlock()
}

func (s *idleSet) remove(tc *trackedConn) {
	s.mu.Lock()
	delete(s.conns, tc)
	s.mu.Unlock()
}

// reap closes the connections idle since before now less the timeout,
// and returns how many it closed.
func (s *idleSet) reap(now time.Time) int {
	cutoff := now.Add(-s.timeout).UnixNano()
	halfCutoff := now.Add(-min(s.timeout, halfClosedIdle)).UnixNano()
	var idle []*trackedConn
	var also []io.Closer
	s.mu.Lock()
	for tc := range s.conns {
		if last := tc.last.Load(); last < cutoff || tc.halfClosed.Load() && last < halfCutoff {
			idle = append(idle, tc)
			also = append(also, tc.also)
			delete(s.conns, tc)
		}
	}
	s.mu.Unlock()
	for i, tc := range idle {
		tc.Close()
		if also[i] != nil {
			also[i].Close()
		}
	}
	return len(idle)
}

// closeNow closes tc and what it closes with (the world side of its
// flow), as reap does: a flow whose two copies are both stuck on the
// world side (a world that neither reads nor closes) ends only so.
func (s *idleSet) closeNow(tc *trackedConn) {
	s.mu.Lock()
	also := tc.also
	delete(s.conns, tc)
	s.mu.Unlock()
	tc.Close()
	if also != nil {
		also.Close()
	}
}

func (s *idleSet) len() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.conns)
}

// trackedConn is a flow's connection as the limits see it: closing it
// ends its flow (f), and its traffic keeps it from going idle (idle).
type trackedConn struct {
	net.Conn
	f    *flow    // nil when the flow is counted elsewhere
	idle *idleSet // nil when not watched
	also io.Closer
	last atomic.Int64 // unix nanos of the last byte either way
	// halfClosed: one way has ended (the guest's EOF read, or ours written)
	halfClosed atomic.Bool

	closed sync.Once
}

func (c *trackedConn) touch() {
	if c.idle != nil {
		c.last.Store(c.idle.now().UnixNano())
	}
}

func (c *trackedConn) Read(p []byte) (int, error) {
	k, err := c.Conn.Read(p)
	if k > 0 {
		c.touch()
	}
	if err == io.EOF {
		c.halfClosed.Store(true)
	}
	return k, err
}

func (c *trackedConn) Write(p []byte) (int, error) {
	k, err := c.Conn.Write(p)
	if k > 0 {
		c.touch()
	}
	return k, err
}

// CloseWrite half-closes when the connection can (splice relies on it).
func (c *trackedConn) CloseWrite() error {
	c.halfClosed.Store(true)
	if cw, ok := c.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return c.Close()
}

func (c *trackedConn) Close() error {
	err := c.Conn.Close()
	c.closed.Do(func() {
		if c.idle != nil {
			c.idle.remove(c)
		}
		if c.f != nil {
			c.f.end()
		}
	})
	return err
}

// watchIdle is splice's hook: the guest side of a flow, watched; idle, it
// is closed with the world side.
func (n *Stack) watchIdle(guest, world net.Conn) net.Conn { return n.lim.idle.watch(guest, world) }

// guard puts the limits on a gateway listener (the proxy, the relay, DNS
// over TCP): each connection accepted is a flow, refused (closed at once,
// and audited) when over MaxFlows, and watched for idleness.
func (n *Stack) guard(l net.Listener) net.Listener { return &guardedListener{Listener: l, n: n} }

type guardedListener struct {
	net.Listener
	n *Stack
	// clients, for a listener of outside clients (ServeProxyOn): their
	// own bound, and records that name them rather than a guest port.
	clients *clientFlows
}

func (l *guardedListener) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		rec := &audit.Record{Kind: audit.KindTCP, Start: time.Now(), Dst: c.LocalAddr().String()}
		if l.clients != nil {
			rec.Client = clip(c.RemoteAddr().String())
		} else if _, port, err := net.SplitHostPort(c.RemoteAddr().String()); err == nil {
			rec.GuestPort, _ = strconv.Atoi(port)
		}
		var cc *clientConn
		if l.clients != nil {
			var rule string
			if cc, rule = l.clients.take(c); cc == nil {
				c.Close()
				rec.Rule = rule
				l.n.deny(rec)
				continue
			}
			c = cc
		}
		f := l.n.admit(rec, false)
		if f == nil {
			c.Close()
			continue
		}
		tc := &trackedConn{Conn: c, f: f, idle: l.n.lim.idle}
		l.n.lim.idle.add(tc)
		if cc != nil {
			l.clients.track(cc, tc)
		}
		return tc, nil
	}
}
