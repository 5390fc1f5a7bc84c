package guestagent

import (
	"bytes"
	"io"
	"maps"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"unicode/utf8"

	"github.com/coworkhq/cowork/internal/agentcall"
)

// socketOwners names the processes that hold guest sockets, for the
// audit log's provenance (agentcall.MethodSocketOwners).
//
// A lookup is one sock_diag dump per protocol and address family asked
// about (the kernel's own table: a socket's flow, uid and inode), then a
// walk of /proc/PID/fd for the inodes, which stops once every socket is
// found. The processes that held the sockets of the last lookups are
// walked first: a program that opens one connection opens many, and a
// batch's sockets mostly belong to a few processes; then the newest
// processes, which a new socket most likely belongs to. A cgroup per exec
// (inet_diag's INET_DIAG_CGROUP_ID, kernels ≥ 5.7) would narrow the walk
// further; the marker in the environment (markerVar) already names the
// exec, so the walk is all it saves.
type socketOwners struct {
	procRoot string
	dump     func(family, protocol uint8) ([]diagSocket, error)

	mu     sync.Mutex // one lookup at a time: the dumps are the guest's whole socket table
	recent []int      // owners of the last lookups' sockets, most recent first
	walks  int        // walks of every process, for tests
}

// maxRecent bounds socketOwners.recent.
const maxRecent = 64

// ownerKey is a socket as a lookup matches it.
type ownerKey struct {
	udp  bool
	port uint16
	peer netip.AddrPort
}

// lookup answers the sockets asked about that it finds an owner for. A
// socket asked about that is not valid is not found.
func (o *socketOwners) lookup(asked []agentcall.Socket) (*agentcall.SocketOwnersReply, error) {
	o.mu.Lock()
	defer o.mu.Unlock()
	rep := &agentcall.SocketOwnersReply{Owners: []agentcall.SocketOwner{}}
	want := map[ownerKey]int{} // to asked's index
	var tcp, udp bool
	for i, s := range asked {
		peer, err := netip.ParseAddrPort(s.Peer)
		if err != nil || s.Port < 1 || s.Port > 65535 || (s.Proto != "tcp" && s.Proto != "udp") {
			continue
		}
		k := ownerKey{udp: s.Proto == "udp", port: uint16(s.Port), peer: netip.AddrPortFrom(peer.Addr().Unmap(), peer.Port())}
		want[k] = i
		tcp, udp = tcp || !k.udp, udp || k.udp
	}
	found := map[int]diagSocket{} // asked's index to the socket
	var firstErr error
	for _, p := range []struct {
		on    bool
		proto uint8
	}{{tcp, syscall.IPPROTO_TCP}, {udp, syscall.IPPROTO_UDP}} {
		if !p.on {
			continue
		}
		for _, fam := range []uint8{syscall.AF_INET, syscall.AF_INET6} {
			socks, err := o.dump(fam, p.proto)
			if err != nil {
				// A kernel without the diag modules still has /proc/net.
				socks, err = procNetSockets(o.procRoot, fam, p.proto)
			}
			if err != nil && firstErr == nil {
				firstErr = err
			}
			matchSockets(socks, p.proto == syscall.IPPROTO_UDP, want, found)
		}
	}
	if len(found) == 0 {
		return rep, firstErr
	}
	inodes := make(map[uint32]int, len(found)) // to the pid
	for _, d := range found {
		inodes[d.inode] = 0
	}
	o.findPids(inodes)
	procs := map[int]*agentcall.SocketOwner{}
	for _, i := range slices.Sorted(maps.Keys(found)) {
		d := found[i]
		pid := inodes[d.inode]
		if pid == 0 {
			continue
		}
		p, ok := procs[pid]
		if !ok {
			p = o.describe(pid)
			procs[pid] = p
		}
		if p == nil {
			continue // it ended meanwhile
		}
		so := *p
		so.Socket, so.UID = asked[i], int64(d.uid)
		rep.Owners = append(rep.Owners, so)
	}
	fitReply(rep)
	return rep, nil
}

// fitReply shortens a reply to fit in one line: JSON writes some
// characters of a command line in 6 bytes (\u003c), so a batch of owners
// within the bounds may not fit. Their command lines are cut shorter
// first; then owners are left out from the end.
func fitReply(rep *agentcall.SocketOwnersReply) {
	fits := func() bool {
		_, err := agentcall.AppendLine(nil, agentcall.Reply{SocketOwners: rep})
		return err == nil
	}
	if fits() {
		return
	}
	for i := range rep.Owners {
		rep.Owners[i].Cmd = printable(rep.Owners[i].Cmd, agentcall.MaxOwnerCmd/4)
	}
	for !fits() && len(rep.Owners) > 0 {
		rep.Owners = rep.Owners[:len(rep.Owners)*3/4]
	}
}

// matchSockets puts in found the dumped sockets asked about. A UDP socket
// that is not connected has no peer: it is the owner of a flow from its
// port to anywhere, unless a connected one matches the flow exactly. A
// socket no process holds any more (TCP's FIN_WAIT and TIME_WAIT) has
// inode 0: it names no owner, and looking for it would walk every
// process.
func matchSockets(socks []diagSocket, udp bool, want map[ownerKey]int, found map[int]diagSocket) {
	var loose map[uint16]diagSocket
	for _, d := range socks {
		if d.inode == 0 {
			continue
		}
		if i, ok := want[ownerKey{udp, d.port, d.peer}]; ok {
			found[i] = d
			continue
		}
		if udp && d.peer.Port() == 0 && d.peer.Addr().IsUnspecified() {
			if loose == nil {
				loose = map[uint16]diagSocket{}
			}
			loose[d.port] = d
		}
	}
	for k, i := range want {
		if _, ok := found[i]; !ok && k.udp {
			if d, ok := loose[k.port]; ok {
				found[i] = d
			}
		}
	}
}

// findPids fills in the pid that holds each inode, walking the recent
// owners first, then every process from the highest pid down, until all
// are found.
func (o *socketOwners) findPids(inodes map[uint32]int) {
	left := len(inodes)
	seen := map[int]bool{}
	self := os.Getpid()
	var owners []int
	walk := func(pid int) bool {
		if seen[pid] || pid == self {
			return left > 0
		}
		seen[pid] = true
		if k := o.scanFDs(pid, inodes); k > 0 {
			left -= k
			owners = append(owners, pid)
		}
		return left > 0
	}
	for _, pid := range o.recent {
		if !walk(pid) {
			break
		}
	}
	if left > 0 {
		// Newest first: a new socket is most likely a new process's, and
		// a short-lived one may be gone by the end of a long walk.
		o.walks++
		pids := procPids(o.procRoot)
		for _, pid := range slices.Backward(pids) {
			if !walk(pid) {
				break
			}
		}
	}
	o.recent = append(owners, slices.DeleteFunc(o.recent, func(p int) bool { return slices.Contains(owners, p) })...)
	o.recent = o.recent[:min(len(o.recent), maxRecent)]
}

// scanFDs records pid as the holder of the inodes among its descriptors
// not claimed yet, and says how many it claimed.
func (o *socketOwners) scanFDs(pid int, inodes map[uint32]int) int {
	dir := filepath.Join(o.procRoot, strconv.Itoa(pid), "fd")
	d, err := os.Open(dir)
	if err != nil {
		return 0
	}
	names, _ := d.Readdirnames(maxFDs)
	d.Close()
	k := 0
	for _, n := range names {
		link, err := os.Readlink(dir + "/" + n)
		if err != nil || !strings.HasPrefix(link, "socket:[") || !strings.HasSuffix(link, "]") {
			continue
		}
		ino, err := strconv.ParseUint(link[len("socket:["):len(link)-1], 10, 32)
		if err != nil {
			continue
		}
		if p, ok := inodes[uint32(ino)]; ok && p == 0 {
			inodes[uint32(ino)] = pid
			k++
		}
	}
	return k
}

// describe is the process pid as an owner: its exec, command name and
// command line; nil when it is gone.
func (o *socketOwners) describe(pid int) *agentcall.SocketOwner {
	pdir := filepath.Join(o.procRoot, strconv.Itoa(pid))
	comm, err := readComm(pdir)
	if err != nil {
		return nil
	}
	so := &agentcall.SocketOwner{PID: pid, Comm: printable(comm, agentcall.MaxOwnerComm)}
	if b, err := readHead(filepath.Join(pdir, "cmdline"), 4<<10); err == nil {
		so.Cmd = printable(string(bytes.TrimRight(bytes.ReplaceAll(b, []byte{0}, []byte{' '}), " ")), agentcall.MaxOwnerCmd)
	}
	if env, err := readHead(filepath.Join(pdir, "environ"), 1<<20); err == nil {
		so.Exec = printable(environValue(env, markerVar), 64)
	}
	return so
}

// environValue is key's value in a /proc/PID/environ, "" when it has none.
func environValue(env []byte, key string) string {
	for kv := range bytes.SplitSeq(env, []byte{0}) {
		if v, ok := bytes.CutPrefix(kv, []byte(key+"=")); ok {
			return string(v)
		}
	}
	return ""
}

// readHead reads at most n bytes of a file.
func readHead(path string, n int64) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return io.ReadAll(io.LimitReader(f, n))
}

// printable is s at most max bytes long, cut at a character's start, with
// every control character and invalid byte as '?'.
func printable(s string, max int) string {
	var b strings.Builder
	for _, r := range s {
		if r == utf8.RuneError || r < 0x20 || r == 0x7f || (r >= 0x80 && r < 0xa0) {
			r = '?'
		}
		if b.Len()+utf8.RuneLen(r) > max {
			break
		}
		b.WriteRune(r)
	}
	return b.String()
}

// procNetSockets reads what a dump would say from /proc/net (tcp, tcp6,
// udp, udp6), slower to read and parse but there without the sock_diag
// modules.
func procNetSockets(procRoot string, family, protocol uint8) ([]diagSocket, error) {
	name := "tcp"
	if protocol == syscall.IPPROTO_UDP {
		name = "udp"
	}
	if family == syscall.AF_INET6 {
		name += "6"
	}
	b, err := os.ReadFile(filepath.Join(procRoot, "net", name))
	if err != nil {
		return nil, err
	}
	var out []diagSocket
	for line := range strings.Lines(string(b)) {
		f := strings.Fields(line)
		// sl local rem st tx:rx tr:tm retrnsmt uid timeout inode
		if len(f) < 10 || (protocol == syscall.IPPROTO_TCP && f[3] == tcpListen) {
			continue
		}
		_, lport, err1 := parseProcAddr(f[1])
		raddr, rport, err2 := parseProcAddr(f[2])
		uid, err3 := strconv.ParseUint(f[7], 10, 32)
		ino, err4 := strconv.ParseUint(f[9], 10, 32)
		if err1 != nil || err2 != nil || err3 != nil || err4 != nil {
			continue
		}
		out = append(out, diagSocket{port: lport, peer: netip.AddrPortFrom(raddr.Unmap(), rport), uid: uint32(uid), inode: uint32(ino)})
	}
	return out, nil
}
