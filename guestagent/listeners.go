package guestagent

import (
	"bufio"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/coworkhq/cowork/internal/agentcall"
)

// Socket states in /proc/net/{tcp,udp}[6]: a TCP socket that listens, and
// a UDP socket that is bound but not connected (the kernel shows it as
// TCP_CLOSE).
const (
	tcpListen   = "0A"
	udpUnconned = "07"
)

// listeners reads the guest's listening sockets from the /proc tree at
// procRoot (its net/ files are the agent's network namespace's, the
// guest's own), one entry per protocol, address and port, at most
// agentcall.MaxListeners. A file that is missing (no IPv6) is skipped.
func listeners(procRoot string) (*agentcall.ListenersReply, error) {
	rep := &agentcall.ListenersReply{Ports: []agentcall.Listener{}}
	seen := map[agentcall.Listener]bool{}
	for _, f := range []struct{ name, proto, state string }{
		{"tcp", "tcp", tcpListen}, {"tcp6", "tcp", tcpListen}, {"udp", "udp", udpUnconned}, {"udp6", "udp", udpUnconned},
	} {
		file, err := os.Open(filepath.Join(procRoot, "net", f.name))
		if errors.Is(err, os.ErrNotExist) {
			continue
		}
		if err != nil {
			return nil, err
		}
		sc := bufio.NewScanner(file)
		sc.Scan() // the header
		for sc.Scan() {
			fields := strings.Fields(sc.Text())
			if len(fields) < 4 || fields[3] != f.state {
				continue
			}
			addr, port, err := parseProcAddr(fields[1])
			if err != nil || port == 0 {
				continue
			}
			l := agentcall.Listener{Proto: f.proto, Addr: addr.String(), Port: int(port)}
			if seen[l] {
				continue
			}
			if len(rep.Ports) == agentcall.MaxListeners {
				break
			}
			seen[l] = true
			rep.Ports = append(rep.Ports, l)
		}
		err = sc.Err()
		file.Close()
		if err != nil {
			return nil, fmt.Errorf("read %s: %w", f.name, err)
		}
	}
	return rep, nil
}

// parseProcAddr reads a local address of /proc/net: the IP in hex, each
// 32-bit word in the host's byte order (little-endian on the guests cowork
// runs), then ':' and the port in hex.
func parseProcAddr(s string) (netip.Addr, uint16, error) {
	ipHex, portHex, ok := strings.Cut(s, ":")
	if !ok {
		return netip.Addr{}, 0, fmt.Errorf("address %q", s)
	}
	port, err := strconv.ParseUint(portHex, 16, 16)
	if err != nil {
		return netip.Addr{}, 0, err
	}
	raw, err := hex.DecodeString(ipHex)
	if err != nil || (len(raw) != 4 && len(raw) != 16) {
		return netip.Addr{}, 0, fmt.Errorf("address %q", s)
	}
	ip := make([]byte, len(raw))
	for i := 0; i < len(raw); i += 4 {
		binary.BigEndian.PutUint32(ip[i:], binary.LittleEndian.Uint32(raw[i:]))
	}
	addr, _ := netip.AddrFromSlice(ip)
	return addr, uint16(port), nil
}
