package netstack

import (
	"context"
	"net"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"gvisor.dev/gvisor/pkg/tcpip/adapters/gonet"
	"gvisor.dev/gvisor/pkg/tcpip/transport/udp"
	"gvisor.dev/gvisor/pkg/waiter"

	"github.com/coworkhq/cowork/hostd/netstack/audit"
	"github.com/coworkhq/cowork/hostd/netstack/policy"
)

// udpIdle ends a UDP flow that has carried nothing either way for this long.
const udpIdle = 60 * time.Second

func (n *Stack) udpForwarder() *udp.Forwarder {
	return udp.NewForwarder(n.s, func(r *udp.ForwarderRequest) {
		rec, dst, names := n.newFlow(audit.KindUDP, r.ID())
		v := n.currentRules().CheckFlow(policy.UDP, dst, names)
		if v.Allow && n.cfg.Upstream != "" {
			// All egress must go through the upstream proxy, and UDP cannot.
			v = policy.Verdict{Rule: "upstream proxy: UDP cannot go through it"}
		}
		rec.Rule, rec.Learn = v.Rule, v.Learn
		if !v.Allow {
			n.deny(rec) // throttled: a blocked sender retries
			return      // dropped
		}
		f := n.admit(rec, false)
		if f == nil {
			return // over the limit: dropped, and audited
		}
		lf, rule := n.holdLearned(rec)
		if rule != "" {
			f.end()
			rec.Rule = rule
			n.deny(rec)
			return
		}
		target := hostPort(dst)
		if dst.Addr() == hostAddr {
			target = net.JoinHostPort("127.0.0.1", strconv.Itoa(int(dst.Port())))
		}
		ctx, cancel := context.WithTimeout(context.Background(), connectTimeout)
		world, err := n.direct(ctx, "udp", target)
		cancel()
		if err != nil {
			f.end()
			n.releaseLearned(lf)
			n.finish(rec, audit.Allow, err)
			return
		}
		world = f.owns(world) // closing it ends the flow
		var wq waiter.Queue
		ep, tcpErr := r.CreateEndpoint(&wq)
		if tcpErr != nil {
			world.Close()
			n.releaseLearned(lf)
			n.finish(rec, audit.Allow, errString(tcpErr.String()))
			return
		}
		guest := gonet.NewUDPConn(&wq, ep)
		// When learn mode alone let the flow through, its end closes both
		// sides (at once, if it ended meanwhile), which ends the relay.
		lf.own(world)
		lf.own(guest)
		go func() {
			defer n.releaseLearned(lf)
			n.relayUDP(guest, world, rec)
		}()
	})
}

// relayUDP moves datagrams both ways until the flow goes idle.
func (n *Stack) relayUDP(guest *gonet.UDPConn, world net.Conn, rec *audit.Record) {
	var out, in atomic.Int64
	var last atomic.Int64
	last.Store(time.Now().UnixNano())
	pump := func(from, to net.Conn, count *atomic.Int64, first func()) {
		buf := make([]byte, 65535)
		for {
			from.SetReadDeadline(time.Now().Add(udpIdle))
			k, err := from.Read(buf)
			if err != nil {
				// A deadline ends the flow only if the other way was idle too.
				if ne, ok := err.(net.Error); ok && ne.Timeout() && time.Since(time.Unix(0, last.Load())) < udpIdle {
					continue
				}
				return
			}
			last.Store(time.Now().UnixNano())
			if first != nil {
				first()
				first = nil
			}
			if _, err := to.Write(buf[:k]); err == nil {
				count.Add(int64(k))
			}
		}
	}
	var wg sync.WaitGroup
	wg.Go(func() { pump(guest, world, &out, nil) })
	// The first answer waits for the owner, as a TCP flow's does (splice).
	wg.Go(func() { pump(world, guest, &in, func() { n.owners.holdAnswer(rec) }) })
	// When one way ends (idle, or a closed socket), end the other.
	go func() {
		for {
			time.Sleep(time.Second)
			if time.Since(time.Unix(0, last.Load())) > udpIdle {
				guest.Close()
				world.Close()
				return
			}
		}
	}()
	wg.Wait()
	guest.Close()
	world.Close()
	rec.BytesOut, rec.BytesIn = out.Load(), in.Load()
	n.finish(rec, audit.Allow, nil)
}
