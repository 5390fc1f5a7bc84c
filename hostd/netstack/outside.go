package netstack

import (
	"fmt"
	"net"
	"sync"
	"time"
)

// clientFlows bounds the connections each outside client (a sandbox of a
// cluster, sharing the egress proxy: see ServeProxyOn) holds at once,
// so that one cannot take the flows every other needs; and keeps them
// all, so that the proxy's end closes them and waits for their handlers
// (and records).
type clientFlows struct {
	max int

	mu       sync.Mutex
	by       map[string]int // client IP to its connections
	live     map[*clientConn]struct{}
	ended    bool
	handlers int           // requests being handled (enter)
	idle     chan struct{} // closed when handlers drops to 0 once ended
}

func newClientFlows(max int) *clientFlows {
	return &clientFlows{max: max, by: map[string]int{}, live: map[*clientConn]struct{}{}}
}

// clientIP is what a client's connections are counted by: its address
// without the port, which changes with each connection.
func clientIP(addr net.Addr) string { return clientIPOf(addr.String()) }

// clientIPOf is clientIP of an address as a record keeps it.
func clientIPOf(addr string) string {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return addr
	}
	return host
}

// take counts c as one of its client's, or says why it may not be.
func (cf *clientFlows) take(c net.Conn) (*clientConn, string) {
	ip := clientIP(c.RemoteAddr())
	cf.mu.Lock()
	defer cf.mu.Unlock()
	switch {
	case cf.ended:
		return nil, "egress proxy: ending"
	case cf.by[ip] >= cf.max:
		return nil, fmt.Sprintf("limit: a client may hold %d of the egress proxy's flows at once", cf.max)
	}
	cf.by[ip]++
	cc := &clientConn{Conn: c, cf: cf, ip: ip}
	cf.live[cc] = struct{}{}
	return cc, ""
}

func (cf *clientFlows) release(cc *clientConn) {
	cf.mu.Lock()
	defer cf.mu.Unlock()
	if _, ok := cf.live[cc]; !ok {
		return
	}
	delete(cf.live, cc)
	if cf.by[cc.ip]--; cf.by[cc.ip] == 0 {
		delete(cf.by, cc.ip)
	}
}

// enter counts a request being handled, which writes its record before
// it leaves; false once the proxy ends.
func (cf *clientFlows) enter() bool {
	cf.mu.Lock()
	defer cf.mu.Unlock()
	if cf.ended {
		return false
	}
	cf.handlers++
	return true
}

func (cf *clientFlows) leave() {
	cf.mu.Lock()
	defer cf.mu.Unlock()
	if cf.handlers--; cf.handlers == 0 && cf.idle != nil {
		close(cf.idle)
		cf.idle = nil
	}
}

// track notes the flow cc is accepted as, so that end closes its world
// side too.
func (cf *clientFlows) track(cc *clientConn, tc *trackedConn) {
	cf.mu.Lock()
	cc.tracked = tc
	cf.mu.Unlock()
}

// endWait bounds how long end waits for the requests being handled: less
// than the 30 s a Kubernetes pod is given between SIGTERM and SIGKILL.
const endWait = 20 * time.Second

// end closes every connection (and the world side of its flow), refuses
// those accepted and the requests begun after, and waits for the requests
// being handled to leave, their records written, endWait at most. It
// says how many were still handled when it gave up.
func (cf *clientFlows) end() int {
	cf.mu.Lock()
	cf.ended = true
	live := make([]*clientConn, 0, len(cf.live))
	tracked := make([]*trackedConn, 0, len(cf.live))
	for cc := range cf.live {
		live = append(live, cc)
		tracked = append(tracked, cc.tracked)
	}
	var idle chan struct{}
	if cf.handlers > 0 {
		idle = make(chan struct{})
		cf.idle = idle
	}
	cf.mu.Unlock()
	for i, cc := range live {
		if tc := tracked[i]; tc != nil && tc.idle != nil {
			tc.idle.closeNow(tc)
		} else {
			cc.Conn.Close()
		}
	}
	if idle == nil {
		return 0
	}
	t := time.NewTimer(endWait)
	defer t.Stop()
	select {
	case <-idle:
		return 0
	case <-t.C:
		cf.mu.Lock()
		defer cf.mu.Unlock()
		return cf.handlers
	}
}

// clientConn is an outside client's connection, counted until it closes.
type clientConn struct {
	net.Conn
	cf      *clientFlows
	ip      string
	tracked *trackedConn // its flow (cf.mu)
}

// CloseWrite half-closes when the connection can (splice relies on it).
func (c *clientConn) CloseWrite() error {
	if cw, ok := c.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return c.Close()
}

func (c *clientConn) Close() error {
	err := c.Conn.Close()
	c.cf.release(c)
	return err
}
