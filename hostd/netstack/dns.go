package netstack

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"time"

	"github.com/miekg/dns"
	"gvisor.dev/gvisor/pkg/tcpip/adapters/gonet"
	"gvisor.dev/gvisor/pkg/tcpip/network/ipv4"

	"github.com/coworkhq/cowork/hostd/netstack/audit"
)

// localZone is answered by the gateway itself.
const localZone = "cowork.internal."

// serveDNS answers the guest's queries on the gateway's port 53, UDP and
// TCP: each query is judged by the policy, forwarded to the host's
// resolvers when allowed, and its answers remembered (the policy binds
// names to the addresses they returned) and logged.
func (n *Stack) serveDNS() error {
	addr := gatewayAddress(53)
	udpConn, err := gonet.DialUDP(n.s, &addr, nil, ipv4.ProtocolNumber)
	if err != nil {
		return err
	}
	client := &dns.Client{Timeout: 5 * time.Second}
	tcpClient := &dns.Client{Net: "tcp", Timeout: 5 * time.Second}
	handler := n.limitDNS(dns.HandlerFunc(func(w dns.ResponseWriter, q *dns.Msg) {
		_ = w.WriteMsg(n.answer(q, client, tcpClient, w.RemoteAddr(), w.LocalAddr()))
	}))
	n.serve("DNS (UDP)", (&dns.Server{PacketConn: udpConn, Handler: handler, MsgAcceptFunc: n.acceptQuery}).ActivateAndServe)
	return n.serveGateway("DNS (TCP)", 53, func(l net.Listener) error {
		return (&dns.Server{Listener: l, Handler: handler, MsgAcceptFunc: n.acceptQuery}).ActivateAndServe()
	})
}

// acceptQuery lets a query with other than one question through to answer,
// which refuses it with a line (the library would refuse it silently);
// whatever else the library refuses (updates, odd counts) gets a line
// here, with what the header says.
func (n *Stack) acceptQuery(h dns.Header) dns.MsgAcceptAction {
	action := dns.DefaultMsgAcceptFunc(h)
	const qr = 1 << 15
	opcode := int(h.Bits>>11) & 0xF
	if action == dns.MsgReject && h.Bits&qr == 0 && opcode == dns.OpcodeQuery && h.Qdcount != 1 {
		return dns.MsgAccept
	}
	if action == dns.MsgReject || action == dns.MsgRejectNotImplemented {
		n.record(&audit.Record{Kind: audit.KindDNS, Verdict: audit.Deny, Time: time.Now(),
			Rule: fmt.Sprintf("dns: refused a message with opcode %d and %d/%d/%d/%d records", opcode, h.Qdcount, h.Ancount, h.Nscount, h.Arcount)})
	}
	return action
}

// answer builds the reply to one query.
func (n *Stack) answer(q *dns.Msg, client, tcpClient *dns.Client, guest, gateway net.Addr) *dns.Msg {
	reply := new(dns.Msg)
	reply.SetReply(q)
	reply.RecursionAvailable = true
	if len(q.Question) != 1 {
		// One question per query is all resolvers answer (RFC 9619); the
		// others would be forwarded unjudged, so none is.
		reply.Rcode = dns.RcodeFormatError
		rec := &audit.Record{Kind: audit.KindDNS, Verdict: audit.Deny, RCode: dns.RcodeToString[reply.Rcode],
			Rule: fmt.Sprintf("dns: %d questions in one query; one is allowed", len(q.Question))}
		if len(q.Question) > 0 {
			rec.Name = strings.TrimSuffix(strings.ToLower(q.Question[0].Name), ".")
			rec.QType = dns.TypeToString[q.Question[0].Qtype]
		}
		rec.Time = time.Now()
		n.record(rec)
		return reply
	}
	question := q.Question[0]
	name := strings.ToLower(question.Name)
	rec := &audit.Record{Kind: audit.KindDNS, Name: strings.TrimSuffix(name, "."), QType: dns.TypeToString[question.Qtype]}
	n.askQuerier(rec, guest, gateway)

	if rule := n.auditDown(); rule != "" {
		rec.Verdict, rec.Rule = audit.Deny, rule
		reply.Rcode = dns.RcodeServerFailure // the guest's resolver tries again
	} else if name == localZone || strings.HasSuffix(name, "."+localZone) {
		rec.Verdict, rec.Rule = audit.Allow, "local"
		n.answerLocal(reply, question)
	} else if v := n.currentRules().CheckName(name); !v.Allow {
		rec.Verdict, rec.Rule = audit.Deny, v.Rule
		reply.Rcode = dns.RcodeNameError
		// Extended DNS Error 15, "Blocked": say why, for those who look.
		reply.SetEdns0(1232, false)
		opt := reply.IsEdns0()
		opt.Option = append(opt.Option, &dns.EDNS0_EDE{InfoCode: dns.ExtendedErrorCodeBlocked, ExtraText: "cowork network policy: " + v.Rule})
	} else {
		rec.Verdict, rec.Rule, rec.Learn = audit.Allow, v.Rule, v.Learn
		up, err := n.forward(q, client, tcpClient)
		if err != nil {
			reply.Rcode = dns.RcodeServerFailure
			rec.Error = err.Error()
		} else if !n.bind(up) {
			// An answer the policy could not remember is not given: the
			// guest would connect to its addresses judged without the name.
			reply.Rcode = dns.RcodeServerFailure
			rec.Error = "the table of resolved names is full (the guest resolved too many names); answers are withheld until bindings expire"
		} else {
			reply = up
			reply.Id = q.Id
		}
	}
	rec.RCode = dns.RcodeToString[reply.Rcode]
	for _, rr := range reply.Answer {
		switch a := rr.(type) {
		case *dns.A:
			rec.Answers = append(rec.Answers, a.A.String())
		case *dns.AAAA:
			rec.Answers = append(rec.Answers, a.AAAA.String())
		case *dns.CNAME:
			rec.Answers = append(rec.Answers, "CNAME "+strings.TrimSuffix(a.Target, "."))
		}
	}
	rec.Time = time.Now()
	// A resolver's socket lives as long as it waits for this answer, and
	// no longer: a program that resolves through its own (glibc's, with
	// no resolver in the guest) closes it once answered.
	n.owners.holdAnswer(rec)
	n.record(rec)
	return reply
}

// answerLocal serves host.cowork.internal and gateway.cowork.internal.
func (n *Stack) answerLocal(reply *dns.Msg, q dns.Question) {
	var ip netip.Addr
	local := strings.TrimSuffix(strings.ToLower(q.Name), "."+localZone)
	switch local {
	case "host":
		ip = hostAddr
	case "gateway":
		ip = gatewayAddr
	default:
		reply.Rcode = dns.RcodeNameError
		return
	}
	// Bound like any answer, so a flow there is named by it.
	n.bindings.Add(ip, time.Hour, local+"."+strings.TrimSuffix(localZone, "."))
	if q.Qtype == dns.TypeA || q.Qtype == dns.TypeANY {
		reply.Answer = append(reply.Answer, &dns.A{
			Hdr: dns.RR_Header{Name: q.Name, Rrtype: dns.TypeA, Class: dns.ClassINET, Ttl: 3600},
			A:   net.IP(ip.AsSlice()),
		})
	}
}

// forward asks the host's resolvers for the name in turn (the name's
// domain's, when the host has resolvers for it), over TCP when the UDP
// answer was truncated.
func (n *Stack) forward(q *dns.Msg, client, tcpClient *dns.Client) (*dns.Msg, error) {
	var lastErr error = errString("no DNS resolver configured on the host")
	var name string
	if len(q.Question) > 0 {
		name = q.Question[0].Name
	}
	for _, server := range n.cfg.serversFor(name) {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		r, _, err := client.ExchangeContext(ctx, q, server)
		if err == nil && r.Truncated {
			r, _, err = tcpClient.ExchangeContext(ctx, q, server)
		}
		cancel()
		if err == nil {
			return r, nil
		}
		lastErr = err
	}
	return nil, lastErr
}

// bind remembers the addresses an answer gave for its name and CNAME
// chain; false when the table had no room for all of them.
func (n *Stack) bind(reply *dns.Msg) bool {
	if len(reply.Question) == 0 {
		return true
	}
	names := []string{reply.Question[0].Name}
	for _, rr := range reply.Answer {
		if c, ok := rr.(*dns.CNAME); ok {
			names = append(names, c.Target)
		}
	}
	for _, rr := range reply.Answer {
		var ip net.IP
		switch a := rr.(type) {
		case *dns.A:
			ip = a.A
		case *dns.AAAA:
			ip = a.AAAA
		default:
			continue
		}
		if addr, ok := netip.AddrFromSlice(ip); ok && !n.bindings.Add(addr, time.Duration(rr.Header().Ttl)*time.Second, names...) {
			return false
		}
	}
	return true
}

// askQuerier looks up the guest process that sent a query from guest to
// gateway (see owners). In a guest with a resolver of its own (the Ubuntu
// guest's systemd-resolved) that is the resolver, not the program whose
// name it resolves.
func (n *Stack) askQuerier(rec *audit.Record, guest, gateway net.Addr) {
	var proto string
	var from, to netip.AddrPort
	switch g := guest.(type) {
	case *net.UDPAddr:
		proto, from = UDP, g.AddrPort()
	case *net.TCPAddr:
		proto, from = "tcp", g.AddrPort()
	default:
		return
	}
	switch a := gateway.(type) {
	case *net.UDPAddr:
		to = a.AddrPort()
	case *net.TCPAddr:
		to = a.AddrPort()
	}
	if !to.IsValid() {
		return
	}
	rec.GuestPort = int(from.Port())
	n.owners.ask(rec, proto, rec.GuestPort, netip.AddrPortFrom(to.Addr().Unmap(), to.Port()))
}
