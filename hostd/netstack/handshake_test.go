//go:build linux

package netstack

import (
	"context"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/header"
)

// TestHandshakeTheGuestNeverFinishes: a SYN whose SYN-ACK the guest never
// answers holds its host connection and slots for Limits.HandshakeTimeout, not
// for the two minutes gVisor goes on retransmitting the SYN-ACK.
func TestHandshakeTheGuestNeverFinishes(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	accepted := make(chan net.Conn, 1)
	go func() {
		if c, err := l.Accept(); err == nil {
			accepted <- c
		}
	}()
	var d net.Dialer
	n, err := New(Config{
		GuestMAC: GuestMAC("test"), LANs: []netip.Prefix{}, Resolvers: []string{"127.0.0.1:1"},
		Limits: Limits{HandshakeTimeout: 200 * time.Millisecond},
		Log:    slog.New(slog.NewTextHandler(io.Discard, nil)),
		DialContext: func(ctx context.Context, network, _ string) (net.Conn, error) {
			return d.DialContext(ctx, network, l.Addr().String())
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	defer n.Close()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	nic, err := n.Attach(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer nic.Close()
	fd := int(nic.Fd())
	synAcks := make(chan struct{}, 100)
	stop := make(chan struct{})
	defer close(stop)
	go answerARP(fd, GuestMAC("test"), synAcks, stop)
	if _, err := unix.Write(fd, synFrame(GuestMAC("test"), 40000, netip.MustParseAddrPort("198.51.100.50:80"))); err != nil {
		t.Fatal(err)
	}
	var world net.Conn
	select {
	case world = <-accepted:
	case <-time.After(30 * time.Second):
		t.Fatal("the flow was never dialled")
	}
	defer world.Close()
	world.SetReadDeadline(time.Now().Add(30 * time.Second))
	if _, err := world.Read(make([]byte, 1)); err != io.EOF {
		t.Fatalf("the host side of a half-open flow: %v, want it closed", err)
	}
	waitFor(t, "the slots to come back", func() bool { st := n.FlowStats(); return st.Active == 0 && st.Pending == 0 })
	select {
	case <-synAcks:
	default:
		t.Fatal("the stack never sent the SYN-ACK")
	}
}

// answerARP plays a guest that answers ARP for its address and ignores
// everything else, noting the SYN-ACKs it got, until stop.
func answerARP(fd int, mac net.HardwareAddr, synAcks chan<- struct{}, stop <-chan struct{}) {
	unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &unix.Timeval{Usec: 100_000})
	buf := make([]byte, 2048)
	for {
		select {
		case <-stop:
			return
		default:
		}
		k, err := unix.Read(fd, buf)
		if err != nil {
			continue
		}
		eth := header.Ethernet(buf[:k])
		switch eth.Type() {
		case header.IPv4ProtocolNumber:
			ip := header.IPv4(buf[header.EthernetMinimumSize:k])
			if ip.TransportProtocol() == header.TCPProtocolNumber {
				if f := header.TCP(ip.Payload()).Flags(); f.Contains(header.TCPFlagSyn | header.TCPFlagAck) {
					select {
					case synAcks <- struct{}{}:
					default:
					}
				}
			}
		case header.ARPProtocolNumber:
			req := header.ARP(buf[header.EthernetMinimumSize:k])
			if !req.IsValid() || req.Op() != header.ARPRequest || netip.AddrFrom4([4]byte(req.ProtocolAddressTarget())) != netip.MustParseAddr(GuestIP) {
				continue
			}
			b := make([]byte, header.EthernetMinimumSize+header.ARPSize)
			header.Ethernet(b).Encode(&header.EthernetFields{SrcAddr: tcpip.LinkAddress(mac), DstAddr: tcpip.LinkAddress(req.HardwareAddressSender()), Type: header.ARPProtocolNumber})
			reply := header.ARP(b[header.EthernetMinimumSize:])
			reply.SetIPv4OverEthernet()
			reply.SetOp(header.ARPReply)
			copy(reply.HardwareAddressSender(), mac)
			copy(reply.ProtocolAddressSender(), req.ProtocolAddressTarget())
			copy(reply.HardwareAddressTarget(), req.HardwareAddressSender())
			copy(reply.ProtocolAddressTarget(), req.ProtocolAddressSender())
			unix.Write(fd, b)
		}
	}
}

// synFrame is a guest's TCP SYN to dst, as it comes on the NIC.
func synFrame(mac net.HardwareAddr, srcPort uint16, dst netip.AddrPort) []byte {
	b := make([]byte, header.EthernetMinimumSize+header.IPv4MinimumSize+header.TCPMinimumSize)
	gw, _ := net.ParseMAC(gatewayMAC)
	header.Ethernet(b).Encode(&header.EthernetFields{SrcAddr: tcpip.LinkAddress(mac), DstAddr: tcpip.LinkAddress(gw), Type: header.IPv4ProtocolNumber})
	src, dstAddr := tcpip.AddrFrom4(netip4(GuestIP)), tcpip.AddrFrom4(dst.Addr().As4())
	ip := header.IPv4(b[header.EthernetMinimumSize:])
	ip.Encode(&header.IPv4Fields{TotalLength: uint16(len(b) - header.EthernetMinimumSize), TTL: 64, Protocol: uint8(header.TCPProtocolNumber), SrcAddr: src, DstAddr: dstAddr})
	ip.SetChecksum(^ip.CalculateChecksum())
	tcpHdr := header.TCP(ip.Payload())
	tcpHdr.Encode(&header.TCPFields{SrcPort: srcPort, DstPort: dst.Port(), SeqNum: 1, DataOffset: header.TCPMinimumSize, Flags: header.TCPFlagSyn, WindowSize: 65535})
	xsum := header.PseudoHeaderChecksum(header.TCPProtocolNumber, src, dstAddr, uint16(len(tcpHdr)))
	tcpHdr.SetChecksum(^tcpHdr.CalculateChecksum(xsum))
	return b
}

// emfileListener fails its first Accepts as a process out of descriptors
// does, then accepts for real.
type emfileListener struct {
	net.Listener
	fail atomic.Int32
}

func (l *emfileListener) Accept() (net.Conn, error) {
	if l.fail.Add(-1) >= 0 {
		return nil, &net.OpError{Op: "accept", Net: "tcp", Err: os.NewSyscallError("accept4", syscall.EMFILE)}
	}
	return l.Listener.Accept()
}

// TestPublishedPortOutlastsEMFILE: a published port's accept loop used to
// return at its first failure and leave the port deaf.
func TestPublishedPortOutlastsEMFILE(t *testing.T) {
	inner, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	l := &emfileListener{Listener: inner}
	l.fail.Store(5)
	n := &Stack{log: slog.New(slog.NewTextHandler(io.Discard, nil))}
	done := make(chan struct{})
	go func() {
		n.servePublished(l, func(c net.Conn) { io.WriteString(c, "served\n"); c.Close() }, nil)
		close(done)
	}()
	c, err := net.Dial("tcp", inner.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetReadDeadline(time.Now().Add(30 * time.Second))
	if got, err := io.ReadAll(c); err != nil || string(got) != "served\n" {
		t.Fatalf("after 5 failed accepts: %q %v; the port stopped serving", got, err)
	}
	inner.Close()
	<-done
}
