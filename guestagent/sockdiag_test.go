package guestagent

import (
	"encoding/binary"
	"errors"
	"net/netip"
	"strings"
	"syscall"
	"testing"

	"github.com/coworkhq/cowork/internal/agentcall"
)

// diagBytes is a datagram of a dump's answer as the kernel sends it: an
// IPv4 TCP socket from port 40000 to 192.0.2.7:443 (uid 1000, inode
// 51234), an IPv6 one holding a v4-mapped peer (::ffff:192.0.2.8, port
// 80, from 40001; uid 0, inode 51235), then NLMSG_DONE.
func diagBytes() []byte {
	var b []byte
	b = append(b, diagRecord(syscall.AF_INET, 40000, netip.MustParseAddrPort("192.0.2.7:443"), 1000, 51234)...)
	b = append(b, diagRecord(syscall.AF_INET6, 40001, netip.MustParseAddrPort("[::ffff:192.0.2.8]:80"), 0, 51235)...)
	return append(b, nlHeader(nlmsgDone, 4)...)
}

func nlHeader(typ uint16, body int) []byte {
	b := make([]byte, nlmsgHeaderLen, nlmsgHeaderLen+body)
	binary.NativeEndian.PutUint32(b, uint32(nlmsgHeaderLen+body))
	binary.NativeEndian.PutUint16(b[4:], typ)
	b = b[:nlmsgHeaderLen+body]
	return b
}

func diagRecord(family uint8, sport uint16, peer netip.AddrPort, uid, inode uint32) []byte {
	b := nlHeader(sockDiagByFamily, inetDiagMsgLen)
	m := b[nlmsgHeaderLen:]
	m[0], m[1] = family, 1 // ESTABLISHED
	binary.BigEndian.PutUint16(m[4:], sport)
	binary.BigEndian.PutUint16(m[6:], peer.Port())
	if family == syscall.AF_INET6 {
		a := peer.Addr().As16()
		copy(m[24:], a[:])
	} else {
		a := peer.Addr().As4()
		copy(m[24:], a[:])
	}
	binary.NativeEndian.PutUint32(m[64:], uid)
	binary.NativeEndian.PutUint32(m[68:], inode)
	return b
}

func TestParseDiag(t *testing.T) {
	got, err := parseDiag(diagBytes(), nil)
	if !errors.Is(err, errDiagDone) {
		t.Fatalf("err = %v, want the dump's end", err)
	}
	want := []diagSocket{
		{port: 40000, peer: netip.MustParseAddrPort("192.0.2.7:443"), uid: 1000, inode: 51234},
		{port: 40001, peer: netip.MustParseAddrPort("192.0.2.8:80"), uid: 0, inode: 51235},
	}
	if len(got) != len(want) {
		t.Fatalf("got %+v, want %+v", got, want)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Errorf("socket %d = %+v, want %+v", i, got[i], want[i])
		}
	}
}

func TestParseDiagRefusesDamage(t *testing.T) {
	full := diagBytes()
	errMsg := nlHeader(nlmsgError, 4)
	errno := -int32(syscall.ENOENT) // netlink's errors are negative
	binary.NativeEndian.PutUint32(errMsg[nlmsgHeaderLen:], uint32(errno))
	for name, b := range map[string][]byte{
		"cut short":             full[:nlmsgHeaderLen+10],
		"length past the end":   func() []byte { b := nlHeader(sockDiagByFamily, 0); binary.NativeEndian.PutUint32(b, 200); return b }(),
		"a socket too short":    nlHeader(sockDiagByFamily, inetDiagMsgLen-1),
		"no diag module":        errMsg,
		"a length under a head": func() []byte { b := nlHeader(sockDiagByFamily, 0); binary.NativeEndian.PutUint32(b, 3); return b }(),
	} {
		if _, err := parseDiag(b, nil); err == nil || errors.Is(err, errDiagDone) {
			t.Errorf("%s: err = %v, want an error", name, err)
		}
	}
	if _, err := parseDiag(errMsg, nil); !errors.Is(err, syscall.ENOENT) {
		t.Errorf("the kernel's ENOENT: err = %v", err)
	}
}

func FuzzParseDiag(f *testing.F) {
	f.Add(diagBytes())
	f.Fuzz(func(t *testing.T, b []byte) {
		out, _ := parseDiag(b, nil)
		if len(out) > len(b)/inetDiagMsgLen {
			t.Fatalf("%d sockets from %d bytes", len(out), len(b))
		}
	})
}

func TestDiagRequest(t *testing.T) {
	b := diagRequest(syscall.AF_INET6, syscall.IPPROTO_TCP, 7)
	ne := binary.NativeEndian
	if int(ne.Uint32(b)) != len(b) || ne.Uint16(b[4:]) != sockDiagByFamily || ne.Uint16(b[6:]) != nlmFRequest|nlmFDump || ne.Uint32(b[8:]) != 7 {
		t.Fatalf("header % x", b[:nlmsgHeaderLen])
	}
	r := b[nlmsgHeaderLen:]
	if r[0] != syscall.AF_INET6 || r[1] != syscall.IPPROTO_TCP || ne.Uint32(r[4:])&(1<<tcpListenState) != 0 {
		t.Errorf("request % x: want AF_INET6, TCP, listeners left out", r[:8])
	}
	if ne.Uint32(diagRequest(syscall.AF_INET, syscall.IPPROTO_UDP, 1)[nlmsgHeaderLen+4:]) != 0xffffffff {
		t.Error("a UDP dump must ask for every state")
	}
}

// A full batch of owners whose every field is as long as it may be, and
// whose command lines are all characters JSON writes long, still fits in
// one line.
func TestFitReply(t *testing.T) {
	rep := &agentcall.SocketOwnersReply{}
	for i := range agentcall.MaxSocketQueries {
		rep.Owners = append(rep.Owners, agentcall.SocketOwner{
			Socket: agentcall.Socket{Proto: "tcp", Port: 65535 - i, Peer: "[ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff]:65535"},
			PID:    4194304, UID: 4294967295, Exec: strings.Repeat("<", 64),
			Comm: strings.Repeat("&", agentcall.MaxOwnerComm), Cmd: strings.Repeat("<", agentcall.MaxOwnerCmd),
		})
	}
	fitReply(rep)
	if _, err := agentcall.AppendLine(nil, agentcall.Reply{SocketOwners: rep}); err != nil {
		t.Fatal(err)
	}
	if len(rep.Owners) < agentcall.MaxSocketQueries/2 {
		t.Errorf("%d owners kept of %d", len(rep.Owners), agentcall.MaxSocketQueries)
	}
	small := &agentcall.SocketOwnersReply{Owners: []agentcall.SocketOwner{{PID: 1, Cmd: "curl -s http://example.com/?a=1&b=2"}}}
	fitReply(small)
	if small.Owners[0].Cmd != "curl -s http://example.com/?a=1&b=2" {
		t.Errorf("a reply that fits was changed: %q", small.Owners[0].Cmd)
	}
}

// A batch over the bound is refused whole; one within it is answered.
func TestCallSocketOwnersBounds(t *testing.T) {
	s := New(Options{})
	s.owners.dump = func(uint8, uint8) ([]diagSocket, error) { return nil, nil }
	one := `{"proto":"tcp","port":1,"peer":"192.0.2.1:80"}`
	over := `{"method":"socket_owners","sockets":[` + strings.Repeat(one+",", agentcall.MaxSocketQueries) + one + "]}\n"
	reps := ask(t, s, over)
	if len(reps) != 1 || reps[0].Kind != agentcall.KindInvalid || !strings.Contains(reps[0].Error, "at most") {
		t.Errorf("%d sockets: %+v", agentcall.MaxSocketQueries+1, reps)
	}
	reps = ask(t, s, `{"method":"socket_owners","sockets":[`+one+"]}\n")
	if len(reps) != 1 || reps[0].SocketOwners == nil || len(reps[0].SocketOwners.Owners) != 0 {
		t.Errorf("a socket nobody holds: %+v", reps)
	}
}

// A socket that no process holds any more (TIME_WAIT: inode 0) is not
// looked for: a batch asking about one walks no process.
func TestClosedSocketsWalkNothing(t *testing.T) {
	b := diagRecord(syscall.AF_INET, 40002, netip.MustParseAddrPort("192.0.2.9:443"), 1000, 0)
	b = append(b, nlHeader(nlmsgDone, 4)...)
	o := &socketOwners{procRoot: t.TempDir(), dump: func(family, _ uint8) ([]diagSocket, error) {
		if family != syscall.AF_INET {
			return nil, nil
		}
		socks, err := parseDiag(b, nil)
		if !errors.Is(err, errDiagDone) || len(socks) != 1 || socks[0].inode != 0 {
			t.Fatalf("recorded dump: %+v, %v", socks, err)
		}
		return socks, nil
	}}
	rep, err := o.lookup([]agentcall.Socket{{Proto: "tcp", Port: 40002, Peer: "192.0.2.9:443"}})
	if err != nil || len(rep.Owners) != 0 || o.walks != 0 {
		t.Errorf("owners %+v, err %v, %d walks of every process; want none", rep.Owners, err, o.walks)
	}
}
