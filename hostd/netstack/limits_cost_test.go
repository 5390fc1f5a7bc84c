//go:build linux

package netstack

import (
	"net"
	"os"
	"runtime"
	"testing"
	"time"

	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/transport/tcp"

	"github.com/coworkhq/cowork/hostd/netstack/policy"
	"github.com/coworkhq/cowork/internal/procstat"
)

// TestFlowCost measures what an open TCP flow costs the process the stack
// runs in, the numbers behind Limits' defaults, and holds the line on
// descriptors (one a flow: MaxFlows relies on it) and goroutines. The fake
// world lives in the same process; its share (a socket and a goroutine a
// flow) is taken out, and so is the guest's writer when stuffed. COWORK_FLOW_COST=stuffed also measures flows whose
// both ends stopped reading while the other end kept sending (every
// buffer on the way full; ~300 MiB for 200 flows), with the fake guest's
// buffers made tiny so that they do not count.
func TestFlowCost(t *testing.T) {
	cases := []bool{false}
	if os.Getenv("COWORK_FLOW_COST") == "stuffed" {
		cases = append(cases, true)
	}
	for _, stuffed := range cases {
		t.Run(map[bool]string{false: "quiet", true: "stuffed"}[stuffed], func(t *testing.T) {
			const flows = 200
			fds, goroutines, rss, heap := measureFlows(t, flows, stuffed)
			t.Logf("%.2f fds, %.2f goroutines, %.0f KiB resident, %.0f KiB heap a flow", fds, goroutines, rss, heap)
			if fds > 1.05 || goroutines > 3.05 {
				t.Errorf("a flow costs %.2f descriptors and %.2f goroutines; want at most 1 and 3", fds, goroutines)
			}
			// A quiet flow keeps only small buffers (the large ones cost
			// 512 KiB a flow, half a gigabyte for a guest's thousand).
			if !stuffed && heap > 128 {
				t.Errorf("a quiet flow holds %.0f KiB of heap; want at most 128", heap)
			}
		})
	}
}

var flood = make([]byte, 8<<20)

func measureFlows(t *testing.T, flows int, stuffed bool) (fds, goroutines, rssKiB, heapKiB float64) {
	tn := newTestNet(t, policy.Policy{})
	tn.world.serveTCP(t, "198.51.100.10:80", func(c net.Conn) {
		for stuffed { // the guest never reads: this blocks once every buffer is full
			if _, err := c.Write(flood); err != nil {
				return
			}
		}
		lineEcho(c)
	})
	if stuffed {
		rcv := tcpip.TCPReceiveBufferSizeRangeOption{Min: 4096, Default: 4096, Max: 4096}
		snd := tcpip.TCPSendBufferSizeRangeOption{Min: 4096, Default: 4096, Max: 4096}
		tn.guest.S.SetTransportProtocolOption(tcp.ProtocolNumber, &rcv)
		tn.guest.S.SetTransportProtocolOption(tcp.ProtocolNumber, &snd)
	}
	runtime.GC()
	before := procstat.Self()
	var m0, m1 runtime.MemStats
	runtime.ReadMemStats(&m0)
	var conns []net.Conn
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	for range flows {
		c, err := tn.dialTCP(t, "198.51.100.10:80")
		if err != nil {
			t.Fatal(err)
		}
		conns = append(conns, c)
		if stuffed {
			go func() { // the world never reads either
				for {
					if _, err := c.Write(flood); err != nil {
						return
					}
				}
			}()
		} else if err := roundTrip(c, "hello"); err != nil {
			t.Fatal(err)
		}
	}
	waitFor(t, "the flows to be counted", func() bool { return tn.FlowStats().Active == int64(flows) })
	if stuffed {
		time.Sleep(5 * time.Second) // for the buffers to fill
	}
	runtime.GC()
	after := procstat.Self()
	runtime.ReadMemStats(&m1)
	per := func(a, b int64) float64 { return float64(b-a) / float64(flows) }
	theirs := 1.0 // the world's goroutine, and the guest's writer
	if stuffed {
		theirs = 2
	}
	return per(int64(before.OpenFDs), int64(after.OpenFDs)) - 1,
		per(int64(before.Goroutines), int64(after.Goroutines)) - theirs,
		per(before.RSSBytes, after.RSSBytes) / 1024,
		per(int64(m0.HeapInuse), int64(m1.HeapInuse)) / 1024
}
