// Package netstack is the guest's network: a user-space stack in hostd
// that the VM's NIC is attached to through a SOCK_DGRAM socketpair (one
// Ethernet frame per datagram), the attachment QEMU's `-netdev dgram` and
// vz's file-handle attachment both take.
//
// Today it is gvisor-tap-vsock's stock virtual network (DHCP, DNS, NAT to
// the host's network); the auditing, policy-enforcing stack replaces it.
package netstack

import (
	"context"
	"crypto/sha256"
	"fmt"
	"net"
	"os"
	"strconv"

	"github.com/containers/gvisor-tap-vsock/pkg/types"
	"github.com/containers/gvisor-tap-vsock/pkg/virtualnetwork"
	"golang.org/x/sys/unix"
)

// The guest network's fixed addresses.
const (
	Subnet    = "192.168.127.0/24"
	GatewayIP = "192.168.127.1"
	GuestIP   = "192.168.127.2"
	HostIP    = "192.168.127.254" // the host's loopback, when a port is exposed
	MTU       = 1500

	gatewayMAC = "5a:94:ef:e4:0c:dd"
)

// Socket buffer sizes of the frame socketpair: frames arrive in bursts.
const (
	sendBuffer = 1 << 20
	recvBuffer = 4 << 20
)

// GuestMAC is the stable MAC address of an instance's NIC (locally
// administered, derived from its name), so its DHCP lease never changes.
func GuestMAC(instance string) net.HardwareAddr {
	h := sha256.Sum256([]byte("cowork-mac:" + instance))
	return net.HardwareAddr{0x52, 0x54, h[0], h[1], h[2], h[3]}
}

// Stack is a running guest network.
type Stack struct {
	vn  *virtualnetwork.VirtualNetwork
	mac net.HardwareAddr
}

// Forward makes guest port GuestPort reachable at HostAddr on the host.
type Forward struct {
	HostAddr  string
	GuestPort int
}

// New builds the network for a guest NIC with the given MAC, and listens
// on the host for the forwarded ports.
func New(mac net.HardwareAddr, forwards []Forward) (*Stack, error) {
	fw := map[string]string{}
	for _, f := range forwards {
		fw[f.HostAddr] = net.JoinHostPort(GuestIP, strconv.Itoa(f.GuestPort))
	}
	vn, err := virtualnetwork.New(&types.Configuration{
		Forwards:          fw,
		MTU:               MTU,
		Subnet:            Subnet,
		GatewayIP:         GatewayIP,
		GatewayMacAddress: gatewayMAC,
		DHCPStaticLeases:  map[string]string{GuestIP: mac.String()},
		DNS: []types.Zone{{
			Name:    "cowork.internal.",
			Records: []types.Record{{Name: "gateway", IP: net.ParseIP(GatewayIP)}, {Name: "host", IP: net.ParseIP(HostIP)}},
		}},
		Protocol: types.VfkitProtocol,
	})
	if err != nil {
		return nil, fmt.Errorf("guest network: %w", err)
	}
	return &Stack{vn: vn, mac: mac}, nil
}

// Attach makes the frame socketpair and serves its stack end until ctx
// ends. The returned file is the VM's end, for the hypervisor to inherit.
func (s *Stack) Attach(ctx context.Context) (*os.File, error) {
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("socketpair: %w", err)
	}
	for _, fd := range fds {
		_ = unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_SNDBUF, sendBuffer)
		_ = unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVBUF, recvBuffer)
	}
	vmEnd := os.NewFile(uintptr(fds[0]), "guest-nic")
	stackFile := os.NewFile(uintptr(fds[1]), "netstack")
	conn, err := net.FileConn(stackFile)
	stackFile.Close()
	if err != nil {
		vmEnd.Close()
		return nil, fmt.Errorf("netstack socket: %w", err)
	}
	go func() {
		<-ctx.Done()
		conn.Close()
	}()
	go func() { _ = s.vn.AcceptVfkit(ctx, conn) }()
	return vmEnd, nil
}
