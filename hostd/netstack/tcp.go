package netstack

import (
	"context"
	"io"
	"net"
	"net/netip"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"gvisor.dev/gvisor/pkg/tcpip/adapters/gonet"
	"gvisor.dev/gvisor/pkg/tcpip/transport/tcp"
	"gvisor.dev/gvisor/pkg/waiter"

	"github.com/coworkhq/cowork/hostd/netstack/audit"
	"github.com/coworkhq/cowork/hostd/netstack/policy"
)

func (n *Stack) tcpForwarder() *tcp.Forwarder {
	return tcp.NewForwarder(n.s, 0, n.lim.inFlight(), n.handleTCP)
}

// handleTCP decides a new guest connection, and for an allowed one dials
// the destination before completing the guest's handshake, so a refused
// destination looks refused to the guest.
func (n *Stack) handleTCP(r *tcp.ForwarderRequest) {
	id := r.ID()
	dst := addrPort(id.LocalAddress, id.LocalPort)
	rec := &audit.Record{Kind: audit.KindTCP, Start: time.Now(), GuestPort: int(id.RemotePort), Dst: hostPort(dst)}
	names := n.bindings.Names(dst.Addr())
	if len(names) > 0 {
		rec.Name, rec.NameFrom = names[0], audit.FromDNS
	}
	v := n.currentRules().CheckFlow(policy.TCP, dst, names)
	rec.Rule = v.Rule
	if !v.Allow {
		r.Complete(true) // RST
		n.deny(rec)
		return
	}
	f := n.admit(rec, true)
	if f == nil {
		r.Complete(true) // over a limit: refused, and audited
		return
	}
	defer f.end()
	out, err := n.dialFlow(context.Background(), dst)
	if err != nil {
		r.Complete(true)
		n.finish(rec, audit.Allow, err)
		return
	}
	var wq waiter.Queue
	ep, err := f.handshake(r, &wq, out)
	if err != nil {
		n.finish(rec, audit.Allow, err)
		return
	}
	in := gonet.NewTCPConn(&wq, ep)
	n.splice(in, out, rec)
}

// dialFlow opens the host side of an allowed flow: the host's loopback for
// the host address, anything else directly or through the upstream proxy.
func (n *Stack) dialFlow(ctx context.Context, dst netip.AddrPort) (net.Conn, error) {
	ctx, cancel := context.WithTimeout(ctx, connectTimeout)
	defer cancel()
	if dst.Addr() == hostAddr {
		return n.direct(ctx, "tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(int(dst.Port()))))
	}
	return n.dial.DialContext(ctx, "tcp", hostPort(dst))
}

// A flow's buffers: each direction starts with a small one, which is all
// a quiet connection ever holds (a guest may keep a thousand of them
// open), and moves to a large one the first time a read fills it, so that
// a bulk transfer costs few reads from gVisor and writes to the host.
const (
	smallBuffer = 16 << 10
	copyBuffer  = 256 << 10
)

// pump copies src to dst until src ends (nil) or either side fails.
func pump(dst io.Writer, src io.Reader) error {
	buf := make([]byte, smallBuffer)
	for {
		k, err := src.Read(buf)
		if k > 0 {
			if _, werr := dst.Write(buf[:k]); werr != nil {
				return werr
			}
			if k == len(buf) && len(buf) < copyBuffer {
				buf = make([]byte, copyBuffer)
			}
		}
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return err
		}
	}
}

// splice copies both ways until both directions end, counting bytes and
// looking at the guest's first bytes for the name they claim (noteClaim);
// then it writes the flow's audit line.
func (n *Stack) splice(guest, world net.Conn, rec *audit.Record) {
	var out, in atomic.Int64
	guest = n.watchIdle(guest, world)
	sniffer := &sniffReader{r: guest}
	var wg sync.WaitGroup
	wg.Go(func() {
		_ = pump(world, countReader(sniffer, &out))
		closeWrite(world)
	})
	wg.Go(func() {
		_ = pump(guest, countReader(world, &in))
		closeWrite(guest)
	})
	wg.Wait()
	guest.Close()
	world.Close()
	claimed, from := sniffer.name()
	n.noteClaim(rec, claimed, from)
	rec.BytesOut += out.Load()
	rec.BytesIn += in.Load()
	n.finish(rec, audit.Allow, nil)
}

// finish completes a flow's record and writes it.
func (n *Stack) finish(rec *audit.Record, verdict string, err error) {
	rec.Time = time.Now()
	rec.Verdict = verdict
	if !rec.Start.IsZero() {
		rec.DurationMs = float64(rec.Time.Sub(rec.Start).Microseconds()) / 1000
	}
	if err != nil {
		rec.Error = err.Error()
	}
	n.record(rec)
}

func closeWrite(c net.Conn) {
	if cw, ok := c.(interface{ CloseWrite() error }); ok {
		_ = cw.CloseWrite()
		return
	}
	_ = c.Close()
}

type counter struct {
	r io.Reader
	n *atomic.Int64
}

func countReader(r io.Reader, n *atomic.Int64) io.Reader { return &counter{r: r, n: n} }

func (c *counter) Read(p []byte) (int, error) {
	k, err := c.r.Read(p)
	c.n.Add(int64(k))
	return k, err
}

// sniffReader keeps the first bytes that pass through it, to name the flow.
type sniffReader struct {
	r    io.Reader
	mu   sync.Mutex
	head []byte
	done bool
	n, f string
}

func (s *sniffReader) Read(p []byte) (int, error) {
	k, err := s.r.Read(p)
	if k > 0 {
		s.mu.Lock()
		if !s.done {
			s.head = append(s.head, p[:k]...)
			if s.n, s.f = SniffName(s.head); s.n != "" || len(s.head) >= sniffLimit {
				s.done, s.head = true, nil
			}
		}
		s.mu.Unlock()
	}
	return k, err
}

func (s *sniffReader) name() (string, string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.n, s.f
}

type errString string

func (e errString) Error() string { return string(e) }
