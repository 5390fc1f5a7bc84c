package hostd

import (
	"context"
	"errors"
	"maps"
	"net"
	"strconv"
	"sync"
	"syscall"
	"time"

	"github.com/coworkhq/cowork/hostd/controlwire"
	"github.com/coworkhq/cowork/hostd/netstack"
	"github.com/coworkhq/cowork/internal/agentcall"
)

// Following the guest's listening sockets (cowork port publish --auto):
// hostd asks the agent what the guest listens on every autoPublishEvery,
// publishes each new TCP or UDP port of minAutoPort and up on this
// machine's loopback at the same number, and takes back those the guest
// no longer listens on. What the agent answers is the guest's claim: it
// can make hostd listen on any loopback port of 1024 and up that nothing
// here is bound to (as many as netstack.MaxPorts allows), never on
// another address; a port already bound here is left alone until the
// guest stops listening on it. A host program that connects to such a
// port while its own server is not running talks to the guest.

// autoPublishEvery is how often hostd asks.
var autoPublishEvery = 2 * time.Second

// minAutoPort is the lowest port followed: those below are the system's
// (ssh, DNS), and binding them here would need privileges anyway.
// maxAutoUDPPort is the highest UDP one: from 32768 up is Linux's
// ephemeral range, where a client's unconnected UDP socket (a QUIC
// client's, a resolver's) looks just like a server's.
const (
	minAutoPort    = 1024
	maxAutoUDPPort = 32767
)

// autoPublish is the follower's state: running while cancel is set.
type autoPublish struct {
	mu     sync.Mutex
	cancel context.CancelFunc
	done   chan struct{}

	// removedMu guards removed: the guest ports the user took back
	// (port rm) while following, left alone while the guest listens.
	removedMu sync.Mutex
	removed   map[portKey]bool
}

// userRemoved tells the follower the user took p back.
func (a *autoPublish) userRemoved(p netstack.Port) {
	a.removedMu.Lock()
	defer a.removedMu.Unlock()
	if a.removed == nil {
		a.removed = map[portKey]bool{}
	}
	if len(a.removed) < netstack.MaxPorts*4 {
		a.removed[portKey{p.Proto, p.GuestPort}] = true
	}
}

// takeRemoved hands the follower what the user took back since.
func (a *autoPublish) takeRemoved() map[portKey]bool {
	a.removedMu.Lock()
	defer a.removedMu.Unlock()
	r := a.removed
	a.removed = nil
	return r
}

// AutoPublish starts or stops following the guest's listening sockets
// while the VM runs; stopping takes back every port it published.
func (s *controlServer) AutoPublish(ctx context.Context, on bool) error {
	n, err := s.network()
	if err != nil {
		return err
	}
	d := s.d
	d.mu.Lock()
	agent := d.agent
	d.mu.Unlock()
	if agent == nil {
		return controlwire.Errorf(controlwire.CodeUnavailable, "the guest agent has not connected yet; try again once the instance is ready")
	}
	a := &d.auto
	a.mu.Lock()
	defer a.mu.Unlock()
	if on == (a.cancel != nil) {
		return nil
	}
	if !on {
		a.cancel()
		<-a.done
		a.cancel, a.done = nil, nil
		return nil
	}
	lctx, cancel := context.WithCancel(context.Background())
	a.cancel, a.done = cancel, make(chan struct{})
	go func() {
		defer close(a.done)
		d.followListeners(lctx, n, agent.Listeners)
	}()
	d.log.Info("following the guest's listening ports")
	return nil
}

// autoPublishing says whether hostd follows the guest's listeners.
func (d *Daemon) autoPublishing() bool {
	d.auto.mu.Lock()
	defer d.auto.mu.Unlock()
	return d.auto.cancel != nil
}

// portKey is a guest port by protocol.
type portKey struct {
	proto string // netstack.UDP or "" (TCP)
	port  int
}

// followListeners publishes and takes back ports as the guest's
// listeners come and go, until ctx ends or hostd closes; then it takes
// back what it published.
func (d *Daemon) followListeners(ctx context.Context, n *netstack.Stack, list func(context.Context) ([]agentcall.Listener, error)) {
	st := &autoState{skip: map[portKey]bool{}, mine: map[portKey]bool{}, told: map[portKey]bool{}}
	d.auto.takeRemoved() // what was removed before this follower began
	defer d.unpublishAuto(n)
	tick := time.NewTicker(autoPublishEvery)
	defer tick.Stop()
	for {
		cctx, cancel := context.WithTimeout(ctx, agentCallTimeout)
		ls, err := list(cctx)
		cancel()
		if err != nil {
			d.log.Warn("could not ask the guest what it listens on", "err", err)
		} else {
			for k := range d.auto.takeRemoved() {
				st.skip[k] = true
			}
			d.syncAuto(n, wantedPorts(ls), st)
		}
		select {
		case <-ctx.Done():
			return
		case <-d.closing:
			return
		case <-tick.C:
		}
	}
}

// wantedPorts are the guest's listeners a published port can reach: on
// every address or the guest's own (a published port dials the guest's
// IP), minAutoPort and up.
func wantedPorts(ls []agentcall.Listener) map[portKey]bool {
	want := map[portKey]bool{}
	for _, l := range ls {
		ip := net.ParseIP(l.Addr)
		if ip == nil || l.Port < minAutoPort || !(ip.IsUnspecified() || ip.Equal(net.ParseIP(netstack.GuestIP))) {
			continue
		}
		k := portKey{port: l.Port}
		if l.Proto == "udp" {
			if l.Port > maxAutoUDPPort {
				continue
			}
			k.proto = netstack.UDP
		}
		want[k] = true
	}
	return want
}

// autoState is what the follower remembers between rounds.
type autoState struct {
	// skip are ports left alone while the guest listens on them: this
	// machine's port was taken, or the user took the port back.
	skip map[portKey]bool
	// told are the ports whose failure is logged already.
	told map[portKey]bool
	// mine are the ports the follower published.
	mine map[portKey]bool
}

// syncAuto publishes what is wanted and not published, and takes back
// the auto ports no longer wanted.
func (d *Daemon) syncAuto(n *netstack.Stack, want map[portKey]bool, st *autoState) {
	have := map[portKey]bool{}
	ports := n.Ports()
	for _, p := range ports {
		have[portKey{p.Proto, p.GuestPort}] = true
	}
	for k := range st.mine {
		if !have[k] { // taken back by the user (port rm), or the stack closed
			delete(st.mine, k)
			if want[k] {
				st.skip[k] = true
			}
		}
	}
	for _, p := range ports {
		k := portKey{p.Proto, p.GuestPort}
		if p.Auto && !want[k] {
			delete(st.mine, k)
			n.UnpublishAuto(p.HostAddr, p.Proto) // not if the user's took its place meanwhile
		}
	}
	// A port the guest stopped listening on is followed (and its failure
	// told) again when a listener comes back.
	gone := func(k portKey, _ bool) bool { return !want[k] }
	maps.DeleteFunc(st.skip, gone)
	maps.DeleteFunc(st.told, gone)
	for k := range want {
		if have[k] || st.skip[k] { // published by anyone: the user's own stays the user's
			continue
		}
		addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(k.port))
		if _, err := n.PublishAuto(k.proto, addr, k.port); err != nil {
			if errors.Is(err, syscall.EADDRINUSE) {
				st.skip[k] = true // this machine's own: left alone
			}
			if !st.told[k] { // else (the most ports are published) tried again next round
				st.told[k] = true
				d.log.Info("not following a guest port", "port", k.port, "udp", k.proto == netstack.UDP, "err", err)
			}
			continue
		}
		st.mine[k] = true
	}
}

// unpublishAuto takes back every auto port.
func (d *Daemon) unpublishAuto(n *netstack.Stack) {
	for _, p := range n.Ports() {
		if p.Auto {
			n.UnpublishAuto(p.HostAddr, p.Proto)
		}
	}
}
