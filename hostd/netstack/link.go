package netstack

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"gvisor.dev/gvisor/pkg/buffer"
	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/header"
	"gvisor.dev/gvisor/pkg/tcpip/stack"
)

// guestLink is the gateway's NIC: the stack's link endpoint over the
// frame socket, one Ethernet frame per datagram. Only one guest is ever on
// the other end, so there is no switch and no table: a frame from the
// guest reaches the stack when it is addressed to the gateway (or
// broadcast), and a frame from the stack reaches the guest when it is
// addressed to the guest's MAC (or broadcast). The rest is dropped.
//
// The stack accepts every address (spoofing, for the forwarders), so its
// ARP would claim every IP of the subnet for the gateway; the link lets
// out only the ARP replies about the gateway's and the host's addresses.
type guestLink struct {
	mac   tcpip.LinkAddress // the gateway's
	guest tcpip.LinkAddress
	mtu   uint32

	dispatcher stack.NetworkDispatcher // set by the stack before any frame

	mu   sync.Mutex // held while a frame is written
	conn net.Conn   // nil until Attach, and after a write failed

	dropped atomic.Int64 // frames to the guest dropped on a full socket (sendLocked)
}

// maxDatagram is the largest datagram read off the frame socket; a frame
// beyond it is cut short (and then dropped by the stack as malformed).
const maxDatagram = 128 << 10

func newGuestLink(gateway, guest net.HardwareAddr) *guestLink {
	return &guestLink{mac: tcpip.LinkAddress(gateway), guest: tcpip.LinkAddress(guest), mtu: MTU}
}

// attach sets the socket the stack's frames go to.
func (l *guestLink) attach(conn net.Conn) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.conn != nil {
		return errors.New("the guest's link is attached already; one guest per network")
	}
	l.conn = conn
	return nil
}

// serve reads the guest's frames from conn (guestFrames: only the guest's
// own MAC passes) and hands those for the gateway to deliver (the ICMP
// filter, then the stack), until conn fails or closes.
func (l *guestLink) serve(conn net.Conn, deliver func(tcpip.NetworkProtocolNumber, *stack.PacketBuffer)) error {
	buf := make([]byte, maxDatagram)
	for {
		n, err := conn.Read(buf)
		if err != nil {
			return fmt.Errorf("read the guest's frames: %w", err)
		}
		if n < header.EthernetMinimumSize {
			continue
		}
		eth := header.Ethernet(buf[:n])
		if dst := eth.DestinationAddress(); dst != l.mac && dst != header.EthernetBroadcastAddress {
			continue
		}
		pkt := stack.NewPacketBuffer(stack.PacketBufferOptions{
			Payload: buffer.MakeWithData(buf[header.EthernetMinimumSize:n]),
		})
		deliver(eth.Type(), pkt)
		pkt.DecRef()
	}
}

// DeliverNetworkPacket hands an inbound packet (its Ethernet header off)
// to the stack.
func (l *guestLink) DeliverNetworkPacket(proto tcpip.NetworkProtocolNumber, pkt *stack.PacketBuffer) {
	l.dispatcher.DeliverNetworkPacket(proto, pkt)
}

// WritePackets sends the stack's packets to the guest, each in its frame.
func (l *guestLink) WritePackets(pkts stack.PacketBufferList) (int, tcpip.Error) {
	n := 0
	for _, pkt := range pkts.AsSlice() {
		if err := l.write(pkt); err != nil {
			return n, err
		}
		n++
	}
	return n, nil
}

func (l *guestLink) write(pkt *stack.PacketBuffer) tcpip.Error {
	r := pkt.EgressRoute
	src := l.mac
	if r.LocalLinkAddress != "" {
		src = r.LocalLinkAddress
	}
	if r.RemoteLinkAddress != l.guest && r.RemoteLinkAddress != header.EthernetBroadcastAddress {
		return nil // nobody there: the guest has one address
	}
	if pkt.NetworkProtocolNumber == header.ARPProtocolNumber && !l.arpAllowed(pkt) {
		return nil
	}
	eth := header.Ethernet(pkt.LinkHeader().Push(header.EthernetMinimumSize))
	eth.Encode(&header.EthernetFields{Type: pkt.NetworkProtocolNumber, SrcAddr: src, DstAddr: r.RemoteLinkAddress})
	v := pkt.ToView()
	defer v.Release()

	l.mu.Lock()
	defer l.mu.Unlock()
	if l.conn == nil {
		return nil
	}
	l.sendLocked(v.AsSlice())
	return nil
}

// A full frame socket answers ENOBUFS on macOS instead of blocking. A
// frame is tried again at once a few times (the guest is draining), then
// after pauses that grow to a millisecond, and dropped after
// fullSocketWait, as a real NIC drops what its full queue cannot take: a
// guest that stops reading its network loses frames instead of making
// hostd spin a CPU on the retries.
const (
	fullSocketSpins = 16
	fullSocketWait  = 100 * time.Millisecond
)

// sendLocked writes one frame to the guest; l.mu is held.
func (l *guestLink) sendLocked(frame []byte) {
	pause, waited := 25*time.Microsecond, time.Duration(0)
	for try := 1; ; try++ {
		_, err := l.conn.Write(frame)
		if !errors.Is(err, syscall.ENOBUFS) {
			if err != nil {
				// The guest is gone or its end is broken: closing makes
				// serve's read fail, which ends the link.
				l.conn.Close()
				l.conn = nil
			}
			return
		}
		if try <= fullSocketSpins {
			continue
		}
		if waited >= fullSocketWait {
			l.dropped.Add(1)
			return
		}
		time.Sleep(pause)
		waited += pause
		pause = min(2*pause, time.Millisecond)
	}
}

// FramesDropped is how many frames to the guest the link dropped since
// the network started because the guest's NIC did not drain its socket
// (sendLocked): `cowork status` shows it.
func (n *Stack) FramesDropped() int64 { return n.link.dropped.Load() }

// arpAllowed says whether an ARP packet the stack sends may go out: all
// but replies claiming an address other than the gateway's and the host's.
func (l *guestLink) arpAllowed(pkt *stack.PacketBuffer) bool {
	h := header.ARP(pkt.NetworkHeader().Slice())
	if !h.IsValid() || h.Op() != header.ARPReply {
		return true
	}
	ip, _ := netip.AddrFromSlice(h.ProtocolAddressSender())
	return ip == gatewayAddr || ip == hostAddr
}

// The rest of stack.LinkEndpoint: an Ethernet NIC with the MTU.

func (l *guestLink) Attach(d stack.NetworkDispatcher) { l.dispatcher = d }
func (l *guestLink) IsAttached() bool                 { return l.dispatcher != nil }
func (l *guestLink) MTU() uint32                      { return l.mtu }
func (l *guestLink) SetMTU(mtu uint32)                { l.mtu = mtu }
func (l *guestLink) MaxHeaderLength() uint16          { return header.EthernetMinimumSize }
func (l *guestLink) LinkAddress() tcpip.LinkAddress   { return l.mac }
func (l *guestLink) SetLinkAddress(a tcpip.LinkAddress) {
	l.mac = a
}
func (l *guestLink) Capabilities() stack.LinkEndpointCapabilities {
	return stack.CapabilityResolutionRequired | stack.CapabilityRXChecksumOffload
}
func (l *guestLink) ARPHardwareType() header.ARPHardwareType        { return header.ARPHardwareEther }
func (l *guestLink) AddHeader(*stack.PacketBuffer)                  {} // write adds it
func (l *guestLink) ParseHeader(*stack.PacketBuffer) bool           { return true }
func (l *guestLink) WriteRawPacket(*stack.PacketBuffer) tcpip.Error { return &tcpip.ErrNotSupported{} }
func (l *guestLink) Wait()                                          {}
func (l *guestLink) Close()                                         {}
func (l *guestLink) SetOnCloseAction(func())                        {}
