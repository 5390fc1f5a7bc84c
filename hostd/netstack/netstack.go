// Package netstack is the guest's network: a user-space TCP/IP stack in
// hostd that the VM's NIC is attached to through a SOCK_DGRAM socketpair
// (one Ethernet frame per datagram), the attachment QEMU's `-netdev dgram`
// and vz's file-handle attachment both take.
//
// It is a gVisor stack on cowork's own link endpoint (guestLink), with
// cowork's own DHCP and DNS servers, TCP and UDP forwarders, HTTP(S) proxy
// and credential relay: each asks the policy before anything leaves and
// writes what happened to the audit log.
package netstack

import (
	"context"
	"crypto/sha256"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/network/arp"
	"gvisor.dev/gvisor/pkg/tcpip/network/ipv4"
	"gvisor.dev/gvisor/pkg/tcpip/stack"
	"gvisor.dev/gvisor/pkg/tcpip/transport/icmp"
	"gvisor.dev/gvisor/pkg/tcpip/transport/tcp"
	"gvisor.dev/gvisor/pkg/tcpip/transport/udp"

	"github.com/coworkhq/cowork/hostd/netstack/audit"
	"github.com/coworkhq/cowork/hostd/netstack/budget"
	"github.com/coworkhq/cowork/hostd/netstack/policy"
)

// The guest network's fixed addresses.
const (
	Subnet    = "192.168.127.0/24"
	GatewayIP = "192.168.127.1"   // DNS, the proxy, the credential relay
	GuestIP   = "192.168.127.2"   // the guest's static DHCP lease
	HostIP    = "192.168.127.254" // host.cowork.internal: the host's loopback, on exposed ports only
	MTU       = 1500

	// ProxyPort is the auditing HTTP(S) proxy's port on the gateway (the seed's).
	ProxyPort = 7890
	// RelayPort is the credential relay's port on the gateway.
	RelayPort = 7891
	// SSHAgentPort is where the guest reaches the host's SSH agent (when
	// Config.SSHAgent serves it): the guest's agent forwards its
	// SSH_AUTH_SOCK there.
	SSHAgentPort = 7892

	gatewayMAC = "5a:94:ef:e4:0c:dd"
	nicID      = 1
)

var (
	gatewayAddr = netip.MustParseAddr(GatewayIP)
	hostAddr    = netip.MustParseAddr(HostIP)
)

// GuestMAC is the stable MAC address of an instance's NIC (locally
// administered, derived from its name), so its DHCP lease never changes.
func GuestMAC(instance string) net.HardwareAddr {
	h := sha256.Sum256([]byte("cowork-mac:" + instance))
	return net.HardwareAddr{0x52, 0x54, h[0], h[1], h[2], h[3]}
}

// Forward makes guest port GuestPort reachable at HostAddr on the host.
type Forward struct {
	HostAddr  string
	GuestPort int
	Proto     string // UDP, or empty for TCP
}

// Config is one guest network.
type Config struct {
	GuestMAC net.HardwareAddr
	Policy   policy.Policy
	// LANs are the host's own subnets, denied like private ranges; nil
	// means the ones found on the host's interfaces.
	LANs []netip.Prefix
	// Forwards publish guest ports on the host.
	Forwards []Forward
	// Upstream, when set, carries all TCP egress: http://host:port (CONNECT)
	// or socks5://host:port.
	Upstream string
	// Resolvers answer the guest's DNS queries (host:port), but for the
	// names of DomainResolvers' domains; nil Resolvers means the host's
	// (hostResolvers: on macOS the system resolver's configuration, VPNs'
	// and /etc/resolver/* included; elsewhere /etc/resolv.conf).
	Resolvers       []string
	DomainResolvers []DomainResolver
	Audit           *audit.Log
	// Ledger counts what the relay's sessions spend and keeps their
	// budgets and the policy's daily one (nil: counted in memory only).
	Ledger *budget.Ledger
	Log    *slog.Logger
	// NameFlag selects this instance in the commands the proxy's 403 page
	// suggests: instance.NameFlag, "" for the default instance.
	NameFlag string
	// Limits bound the flows the guest can hold open (zero: defaults).
	Limits Limits
	// SSHAgent, when set, serves each connection the guest makes to the
	// gateway's SSHAgentPort (hostd/sshagent); nil leaves it closed.
	SSHAgent func(net.Conn) error
	// SecretCA, the instance's own CA (internal/tlsca), signs the
	// certificates the guest is shown for the hosts it holds secrets for
	// (SetSecrets); nil leaves every TLS connection end to end.
	SecretCA *tls.Certificate

	// DialContext and Resolver replace the host's dialer and resolver (for
	// the proxy's lookups); tests point them at a fake internet.
	DialContext func(ctx context.Context, network, addr string) (net.Conn, error)
	Resolver    *net.Resolver

	// Tests set the limits' clock and the audit throttle's window, and
	// break the audit log's writes.
	clock          func() time.Time
	throttleWindow time.Duration
	writeAudit     func(*audit.Record) error
	// Tests break a gateway service's listener.
	wrapListener func(service string, l net.Listener) net.Listener
}

// Stack is a running guest network.
type Stack struct {
	cfg      Config
	log      *slog.Logger
	audit    *audit.Log
	s        *stack.Stack
	link     *icmpFilter // the guest's link (guestLink) as the stack sees it
	bindings *policy.Bindings
	dial     dialer   // egress: direct or through the upstream proxy
	direct   dialFunc // the host itself: its loopback, UDP
	sessions *Sessions
	secrets  secretTable // host-held secrets (SetSecrets)
	leaves   leafCache   // certificates shown for the secrets' hosts
	rawLimit rawLimiter  // audit lines of dropped packets of other protocols
	refusals *refusalLog // the relay's refused requests, rate-limited
	lim      *limiter
	owners   *owners // who in the guest opened each flow (SetOwners)

	ports    ports        // published ports
	udpPeers atomic.Int64 // host peers of every published UDP port
	loops    serveLoops   // the serve loops, and those that failed

	mu       sync.RWMutex
	rules    *policy.Rules             // what the flows are judged by: base, or base in learn mode
	base     *policy.Rules             // the policy as set
	learners int                       // open Learn calls
	learned  map[*learnedFlow]struct{} // flows learn mode alone let through (learned.go)
	// auditFailure is the rule new traffic is refused by while the audit
	// log cannot be written (see write); nil while it can. auditMu guards
	// the count of records lost meanwhile, and since when.
	auditFailure   atomic.Pointer[string]
	auditMu        sync.Mutex
	auditLost      int64
	auditDownSince time.Time
}

// New builds the network: the stack, DHCP, DNS, forwarders, proxy and relay.
func New(cfg Config) (*Stack, error) {
	if cfg.Log == nil {
		cfg.Log = slog.Default()
	}
	if cfg.LANs == nil {
		cfg.LANs = HostLANs()
	}
	if cfg.Resolvers == nil {
		cfg.Resolvers, cfg.DomainResolvers = hostResolvers()
	}
	rules, err := policy.Compile(cfg.Policy, hostAddr, cfg.LANs)
	if err != nil {
		return nil, err
	}
	if cfg.Resolver == nil {
		cfg.Resolver = net.DefaultResolver
	}
	direct := (&net.Dialer{Timeout: connectTimeout, KeepAlive: 30 * time.Second}).DialContext
	if cfg.DialContext != nil {
		direct = cfg.DialContext
	}
	d, err := newDialer(cfg.Upstream, direct)
	if err != nil {
		return nil, err
	}
	n := &Stack{cfg: cfg, log: cfg.Log, audit: cfg.Audit, bindings: policy.NewBindings(), dial: d, direct: direct, rules: rules, base: rules, sessions: newSessions(cfg.Ledger), owners: newOwners(), learned: map[*learnedFlow]struct{}{}}
	n.sessions.ledger.SetDaily(cfg.Policy.DailyBudget())
	n.lim = newLimiter(cfg.Limits, n.record, cfg.Log, cfg.clock, cfg.throttleWindow)
	if err := n.build(); err != nil {
		n.owners.close()
		n.lim.close()
		return nil, err
	}
	return n, nil
}

func (n *Stack) build() error {
	gw, err := net.ParseMAC(gatewayMAC)
	if err != nil {
		return err
	}
	n.link = &icmpFilter{guestLink: newGuestLink(gw, n.cfg.GuestMAC), n: n}

	n.s = stack.New(stack.Options{
		NetworkProtocols:   []stack.NetworkProtocolFactory{ipv4.NewProtocol, arp.NewProtocol},
		TransportProtocols: []stack.TransportProtocolFactory{tcp.NewProtocol, udp.NewProtocol, icmp.NewProtocol4},
	})
	if err := n.s.CreateNIC(nicID, n.link); err != nil {
		return errors.New(err.String())
	}
	if err := n.s.AddProtocolAddress(nicID, tcpip.ProtocolAddress{
		Protocol:          ipv4.ProtocolNumber,
		AddressWithPrefix: tcpip.AddrFrom4(gatewayAddr.As4()).WithPrefix(),
	}, stack.AddressProperties{}); err != nil {
		return errors.New(err.String())
	}
	// Accept packets for any address: every destination is a forwarding
	// decision, made by the handlers below.
	n.s.SetSpoofing(nicID, true)
	n.s.SetPromiscuousMode(nicID, true)
	sub, err := tcpip.NewSubnet(tcpip.AddrFrom4([4]byte{192, 168, 127, 0}), tcpip.MaskFromBytes([]byte{255, 255, 255, 0}))
	if err != nil {
		return errors.New(err.Error())
	}
	n.s.SetRouteTable([]tcpip.Route{{Destination: sub, NIC: nicID}})

	n.s.SetTransportProtocolHandler(tcp.ProtocolNumber, n.tcpForwarder().HandlePacket)
	n.s.SetTransportProtocolHandler(udp.ProtocolNumber, n.udpForwarder().HandlePacket)

	dhcpConn, err := n.listenDHCP()
	if err != nil {
		return fmt.Errorf("listen for DHCP on the gateway's port %d: %w", dhcpServerPort, err)
	}
	n.serve("DHCP", func() error { return n.serveDHCP(dhcpConn) })

	if err := n.serveDNS(); err != nil {
		return err
	}
	if err := n.serveProxy(); err != nil {
		return err
	}
	if err := n.serveRelay(); err != nil {
		return err
	}
	if n.cfg.SSHAgent != nil {
		if err := n.serveGateway("ssh-agent", SSHAgentPort, n.serveConns(n.cfg.SSHAgent)); err != nil {
			return err
		}
	}
	return n.publishConfig()
}

// Attach makes the frame socketpair and serves its stack end until ctx
// ends. The returned file is the VM's end, for the hypervisor to inherit.
func (n *Stack) Attach(ctx context.Context) (*os.File, error) {
	fds, err := framePair()
	if err != nil {
		return nil, fmt.Errorf("socketpair: %w", err)
	}
	for _, fd := range fds {
		if err := sizeFrameBuffers(fd, setsockopt); err != nil {
			unix.Close(fds[0])
			unix.Close(fds[1])
			return nil, err
		}
	}
	vmEnd := os.NewFile(uintptr(fds[0]), "guest-nic")
	stackFile := os.NewFile(uintptr(fds[1]), "netstack")
	conn, err := net.FileConn(stackFile)
	stackFile.Close()
	if err != nil {
		vmEnd.Close()
		return nil, fmt.Errorf("netstack socket: %w", err)
	}
	if err := n.link.attach(conn); err != nil {
		conn.Close()
		vmEnd.Close()
		return nil, err
	}
	go func() {
		<-ctx.Done()
		conn.Close()
	}()
	n.serve("guest link", func() error {
		err := n.link.serve(&guestFrames{Conn: conn, mac: n.cfg.GuestMAC}, n.link.DeliverNetworkPacket)
		if ctx.Err() != nil || errors.Is(err, io.EOF) { // hostd stops, or the VM is gone
			return errEndedAsAsked
		}
		return err
	})
	return vmEnd, nil
}

// Close stops listening on the published ports. The frame socket closes
// with the context given to Attach.
func (n *Stack) Close() {
	n.loops.close()
	n.closePorts()
	n.s.Close()
	n.owners.close()
	n.lim.close()
}

// SetPolicy replaces the policy of a running network. Flows already open
// are left alone (but those learn mode alone let through end with it, see
// Learn); new ones follow the new rules.
func (n *Stack) SetPolicy(p policy.Policy) error {
	r, err := policy.Compile(p, hostAddr, n.cfg.LANs)
	if err != nil {
		return err
	}
	n.mu.Lock()
	n.base = r
	n.setRulesLocked()
	n.mu.Unlock()
	n.sessions.ledger.SetDaily(p.DailyBudget())
	return nil
}

// Learn puts the network in learn mode until end is called (see
// policy.Rules.Learning): what the policy refuses only for not being
// listed is let through, and its audit lines say "learn": true; what it
// refuses on purpose stays refused. Learn calls nest: the mode ends with
// the last end, which also closes every flow learn mode alone let through
// (learned.go); end called again does nothing. A policy set meanwhile is
// learned on. The mode lives in memory only, never in the config: a hostd
// that exits leaves it behind.
func (n *Stack) Learn() (end func()) {
	n.mu.Lock()
	n.learners++
	n.setRulesLocked()
	n.mu.Unlock()
	var once sync.Once
	return func() {
		once.Do(func() {
			n.mu.Lock()
			n.learners--
			n.setRulesLocked()
			cut := n.cutLearnedLocked()
			n.mu.Unlock()
			for lf := range cut {
				lf.close()
			}
		})
	}
}

// Learning reports whether the network is in learn mode.
func (n *Stack) Learning() bool { return n.currentRules().IsLearning() }

func (n *Stack) setRulesLocked() {
	n.rules = n.base
	if n.learners > 0 {
		n.rules = n.base.Learning()
	}
}

func (n *Stack) currentRules() *policy.Rules {
	n.mu.RLock()
	defer n.mu.RUnlock()
	return n.rules
}

// Sessions is the credential relay's table of API sessions.
func (n *Stack) Sessions() *Sessions { return n.sessions }

// Stats sums the audit log since this network started.
func (n *Stack) Stats() audit.Stats {
	if n.audit == nil {
		return audit.Stats{}
	}
	return n.audit.Stats()
}

// record writes an audit line, once its owner is known (see owners).
func (n *Stack) record(r *audit.Record) {
	n.owners.then(r, n.write)
}

// write writes r to the audit log. While the log cannot be written (a full
// disk, a removed folder), the guest's new flows, proxied requests, relay
// calls and DNS queries are refused (auditDown): what is not on the
// record does not go out. Each refusal tries the log again (its line),
// and the first line written opens the way again, followed by a line of
// kind gap that says how many could not be written meanwhile (those of
// flows open before that ended during it among them). Only a failure to write the
// file counts: a record that cannot be encoded is dropped and logged.
func (n *Stack) write(r *audit.Record) { n.written(r) }

// written is write, and says whether r's line was written.
func (n *Stack) written(r *audit.Record) bool {
	if n.audit == nil {
		return true
	}
	write := n.writer()
	err := write(r)
	if err != nil && !ioFailure(err) {
		n.log.Warn("audit log: a record could not be encoded", "kind", r.Kind, "err", err)
		return false
	}
	n.auditMu.Lock()
	defer n.auditMu.Unlock()
	if err != nil {
		if n.auditLost == 0 {
			n.auditDownSince = time.Now()
			rule := auditDownRule
			n.auditFailure.Store(&rule)
			n.log.Error("the audit log cannot be written: refusing the guest's new traffic until it can", "err", err)
		}
		n.auditLost++
		return false
	}
	n.recoverLocked(write)
	return true
}

// auditBack tries the audit log again while it is down, with the line
// that ends the spell (its gap), and says whether it is up: for what is
// refused with no line of its own to try it with (a port to publish).
func (n *Stack) auditBack() bool {
	if n.auditDown() == "" || n.audit == nil {
		return true
	}
	n.auditMu.Lock()
	defer n.auditMu.Unlock()
	n.recoverLocked(n.writer())
	return n.auditLost == 0
}

// writer is the function that writes a line to the audit log.
func (n *Stack) writer() func(*audit.Record) error {
	if n.cfg.writeAudit != nil {
		return n.cfg.writeAudit
	}
	return n.audit.Write
}

// recoverLocked ends an audit-down spell, if one is on, with its gap
// line; auditMu is held.
func (n *Stack) recoverLocked(write func(*audit.Record) error) {
	if n.auditLost == 0 {
		return
	}
	gap := &audit.Record{Kind: audit.KindGap, Verdict: audit.Deny, Rule: auditDownRule,
		Start: n.auditDownSince, Time: time.Now(), Suppressed: n.auditLost,
		Error: fmt.Sprintf("%d records could not be written while the audit log could not be", n.auditLost)}
	if err := write(gap); err != nil {
		n.auditLost++ // the first line after came, its note did not: still down
		return
	}
	n.log.Info("the audit log is written again: the guest's new traffic goes through", "lost", n.auditLost,
		"for", time.Since(n.auditDownSince).Round(time.Millisecond))
	n.auditLost = 0
	n.auditFailure.Store(nil)
}

// auditDownRule is the rule of what is refused while the audit log cannot
// be written; hostd's log says why (the guest is not told the host's
// paths).
const auditDownRule = "audit: the host cannot write the audit log (its disk is full, or the log's folder is gone); new traffic is refused until it can"

// ioFailure says err is the log's file failing (a write, a rotation),
// not a record that could not be encoded.
func ioFailure(err error) bool {
	var pe *fs.PathError
	var errno syscall.Errno
	return errors.As(err, &pe) || errors.As(err, &errno) || errors.Is(err, os.ErrClosed) || errors.Is(err, io.ErrShortWrite)
}

// AuditDown says why the guest's new traffic is refused while the audit
// log cannot be written (see write), or "" while it can.
func (n *Stack) AuditDown() string { return n.auditDown() }

// WriteAudit writes a record of hostd's own (a signature the guest asked
// the lent SSH agent for) to the audit log, as the network's are: a
// failure takes the audit for down, and counts toward its gap. It says
// whether the line was written: what it records must not happen if not.
func (n *Stack) WriteAudit(r *audit.Record) bool { return n.written(r) }

// auditDown is the rule that refuses new traffic while the audit log
// cannot be written, or "".
func (n *Stack) auditDown() string {
	if p := n.auditFailure.Load(); p != nil {
		return *p
	}
	return ""
}

// addrPort is a guest flow's destination, in the canonical form the
// policy judges and dialFlow dials.
func addrPort(a tcpip.Address, port uint16) netip.AddrPort {
	ip, _ := netip.AddrFromSlice(a.AsSlice())
	return policy.CanonicalPort(netip.AddrPortFrom(ip, port))
}

func hostPort(ap netip.AddrPort) string {
	return net.JoinHostPort(ap.Addr().String(), strconv.Itoa(int(ap.Port())))
}
