package netstack

import (
	"cmp"
	"errors"
	"fmt"
	"io"
	"net"
	"slices"
	"strings"
	"sync"
	"time"

	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/adapters/gonet"
	"gvisor.dev/gvisor/pkg/tcpip/network/ipv4"

	"github.com/coworkhq/cowork/internal/termsafe"
)

// ServeFailure is a service of the guest's network whose serve loop ended
// while the network ran: the guest has gone without it since (a proxy
// that stopped accepting leaves every proxied request hanging, and
// nothing else would say why).
type ServeFailure struct {
	Service string // "proxy", "relay", "DNS (TCP)", "guest link", "published port 127.0.0.1:8080"...
	Err     string
	At      time.Time
}

// maxServeError bounds the error kept of a failure.
const maxServeError = 300

// serveLoops tracks the stack's serve loops. Their number is fixed by the
// code and the published ports (at most MaxPorts, each one loop, whose
// failure goes when it is taken back), and each keeps one failure, so the
// table is bounded whatever the guest does.
type serveLoops struct {
	mu      sync.Mutex
	closing bool
	failed  map[string]ServeFailure
}

// serve runs loop, a service's serve loop, on its own goroutine. A loop
// that ends while the stack is not closing failed, whatever it returned
// (nil too: a service that stops is gone either way), unless it returns
// errEndedAsAsked; the failure is logged and kept for status.
func (n *Stack) serve(service string, loop func() error) {
	go func() { n.served(service, loop()) }()
}

// gatewayAddress is port on the gateway's address, where the stack's own
// services (DNS, the proxy, the relay) answer the guest.
func gatewayAddress(port uint16) tcpip.FullAddress {
	return tcpip.FullAddress{NIC: nicID, Addr: tcpip.AddrFrom4(gatewayAddr.As4()), Port: port}
}

// serveGateway listens on the gateway's TCP port for service (the
// proxy's, say) and serves it, guarded by the limits (see guard).
func (n *Stack) serveGateway(service string, port uint16, serve func(net.Listener) error) error {
	ln, err := gonet.ListenTCP(n.s, gatewayAddress(port), ipv4.ProtocolNumber)
	if err != nil {
		return fmt.Errorf("listen for the %s on the gateway's port %d: %w", service, port, err)
	}
	l := n.guard(ln)
	if n.cfg.wrapListener != nil {
		l = n.cfg.wrapListener(service, l)
	}
	n.serve(service, func() error { return serve(l) })
	return nil
}

// serveConns serves each connection a gateway listener accepts with
// handle, closing it after; the listener's guard bounds them (flow
// limits).
func (n *Stack) serveConns(handle func(net.Conn) error) func(net.Listener) error {
	return func(l net.Listener) error {
		for {
			c, err := l.Accept()
			if err != nil {
				return err
			}
			go func() {
				defer c.Close()
				if err := handle(c); err != nil && !errors.Is(err, io.EOF) {
					n.log.Debug("gateway service", "err", err)
				}
			}()
		}
	}
}

// errEndedAsAsked is a loop's way of saying it ended because it was told
// to (its context ended).
var errEndedAsAsked = errString("ended as asked")

func (n *Stack) served(service string, err error) {
	if err == errEndedAsAsked {
		return
	}
	s := &n.loops
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closing {
		return // the normal end, on Close
	}
	msg := "stopped without an error"
	if err != nil {
		msg = termsafe.Line(err.Error())
		if len(msg) > maxServeError {
			msg = strings.ToValidUTF8(msg[:maxServeError], "") + "..."
		}
	}
	n.log.Error(service+" stopped serving; the guest goes without it until the instance restarts (cowork stop, then cowork start)", "err", msg)
	if s.failed == nil {
		s.failed = map[string]ServeFailure{}
	}
	s.failed[service] = ServeFailure{Service: service, Err: msg, At: time.Now()}
}

// closing marks the end of the stack: the loops that end from now on end
// as they should.
func (s *serveLoops) close() {
	s.mu.Lock()
	s.closing = true
	s.mu.Unlock()
}

// forget drops a service's failure: a published port taken back is no
// longer the guest's (ports come and go, failures with them).
func (s *serveLoops) forget(service string) {
	s.mu.Lock()
	delete(s.failed, service)
	s.mu.Unlock()
}

// ServeFailures are the services that stopped serving while the network
// ran, by name; none while all serve.
func (n *Stack) ServeFailures() []ServeFailure {
	s := &n.loops
	s.mu.Lock()
	out := make([]ServeFailure, 0, len(s.failed))
	for _, f := range s.failed {
		out = append(out, f)
	}
	s.mu.Unlock()
	slices.SortFunc(out, func(a, b ServeFailure) int { return cmp.Compare(a.Service, b.Service) })
	return out
}
