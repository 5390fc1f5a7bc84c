//go:build linux

package netstack

import (
	"fmt"
	"io"
	"net"
	"sync/atomic"
	"testing"
	"time"

	"github.com/coworkhq/cowork/hostd/netstack/policy"
)

// fakeClock is a settable clock for the idle timeout.
type fakeClock struct{ ns atomic.Int64 }

func (c *fakeClock) now() time.Time          { return time.Unix(0, c.ns.Load()) }
func (c *fakeClock) advance(d time.Duration) { c.ns.Add(int64(d)) }

// TestIdleFlowsAreClosed: a flow silent both ways for the idle timeout
// is closed, both its ends; one that carried a byte since is not. The
// same holds for a connection to the gateway's proxy.
func TestIdleFlowsAreClosed(t *testing.T) {
	clock := &fakeClock{}
	clock.ns.Store(time.Unix(1_800_000_000, 0).UnixNano())
	tn := newTestNet(t, policy.Policy{}, withLimits(Limits{IdleTimeout: time.Minute}), func(c *Config) { c.clock = clock.now })
	worldEnds := make(chan net.Conn, 4)
	tn.world.serveTCP(t, "198.51.100.10:80", func(c net.Conn) {
		worldEnds <- c
		lineEcho(c)
	})
	open := func() (guest, world net.Conn) {
		c, err := tn.dialTCP(t, "198.51.100.10:80")
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		if err := roundTrip(c, "hello"); err != nil {
			t.Fatal(err)
		}
		return c, <-worldEnds
	}
	busy, _ := open()
	quiet, quietWorld := open()
	proxy, err := tn.dialTCP(t, fmt.Sprintf("%s:%d", GatewayIP, ProxyPort))
	if err != nil {
		t.Fatal(err)
	}
	defer proxy.Close()
	waitFor(t, "three watched connections", func() bool { return tn.lim.idle.len() == 3 })

	clock.advance(40 * time.Second)
	if err := roundTrip(busy, "still talking"); err != nil {
		t.Fatal(err)
	}
	clock.advance(30 * time.Second) // the quiet ones: 70 s; the busy one: 30 s
	tn.lim.idle.reap(clock.now())

	for name, c := range map[string]net.Conn{"the quiet flow": quiet, "the quiet proxy connection": proxy, "the quiet flow's host side": quietWorld} {
		c.SetReadDeadline(time.Now().Add(10 * time.Second))
		if k, err := c.Read(make([]byte, 16)); err == nil || isTimeout(err) {
			t.Errorf("%s after 70 s idle: read %d bytes, %v; want it closed", name, k, err)
		}
	}
	if err := roundTrip(busy, "and on"); err != nil {
		t.Fatalf("the busy flow: %v", err)
	}
	waitFor(t, "the quiet flow's slot", func() bool { return tn.FlowStats().Active == 1 })
	if tn.lim.idle.len() != 1 {
		t.Errorf("%d connections still watched, want 1", tn.lim.idle.len())
	}
}

// TestHalfClosedFlowsAreClosedSooner: a flow the guest closed its way
// (its program exited) to a server that neither answers nor closes is
// closed after halfClosedIdle, long before the idle timeout; an open flow
// as quiet is not.
func TestHalfClosedFlowsAreClosedSooner(t *testing.T) {
	clock := &fakeClock{}
	clock.ns.Store(time.Unix(1_800_000_000, 0).UnixNano())
	tn := newTestNet(t, policy.Policy{}, withLimits(Limits{IdleTimeout: time.Hour}), func(c *Config) { c.clock = clock.now })
	worldEnds := make(chan net.Conn, 2)
	done := make(chan struct{})
	t.Cleanup(func() { close(done) })
	tn.world.serveTCP(t, "198.51.100.10:80", func(c net.Conn) {
		worldEnds <- c
		io.Copy(io.Discard, c) // reads to the end, then neither answers nor closes
		<-done
	})
	open, err := tn.dialTCP(t, "198.51.100.10:80")
	if err != nil {
		t.Fatal(err)
	}
	defer open.Close()
	openWorld := <-worldEnds
	half, err := tn.dialTCP(t, "198.51.100.10:80")
	if err != nil {
		t.Fatal(err)
	}
	defer half.Close()
	halfWorld := <-worldEnds
	half.(interface{ CloseWrite() error }).CloseWrite()
	waitFor(t, "the half-close to pass", func() bool {
		tn.lim.idle.mu.Lock()
		defer tn.lim.idle.mu.Unlock()
		for tc := range tn.lim.idle.conns {
			if tc.halfClosed.Load() {
				return true
			}
		}
		return false
	})
	clock.advance(halfClosedIdle + time.Second)
	tn.lim.idle.reap(clock.now())
	halfWorld.SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, err := halfWorld.Read(make([]byte, 1)); err == nil || isTimeout(err) {
		t.Fatalf("the half-closed flow's host side after %s: %v, want it closed", halfClosedIdle, err)
	}
	openWorld.SetReadDeadline(time.Now().Add(100 * time.Millisecond))
	if _, err := openWorld.Read(make([]byte, 1)); !isTimeout(err) {
		t.Fatalf("the open flow's host side: %v, want it still open", err)
	}
}

func isTimeout(err error) bool {
	ne, ok := err.(net.Error)
	return ok && ne.Timeout()
}
