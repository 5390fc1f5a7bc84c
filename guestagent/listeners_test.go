package guestagent

import (
	"os"
	"path/filepath"
	"slices"
	"testing"

	"github.com/coworkhq/cowork/internal/agentcall"
)

// What the kernel writes: listening TCP sockets on every address, on
// loopback and on ::, a connected one (not listening), bound UDP sockets.
const (
	procTCP = `  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 00000000:1F40 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1 1 0000000000000000 100 0 0 10 0
   1: 0100007F:1538 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 2 1 0000000000000000 100 0 0 10 0
   2: 0F7FA8C0:9C40 017FA8C0:0050 01 00000000:00000000 00:00000000 00000000     0        0 3 1 0000000000000000 100 0 0 10 0
   3: 00000000:1F40 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 4 1 0000000000000000 100 0 0 10 0
`
	procTCP6 = `  sl  local_address                         remote_address                        st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 00000000000000000000000000000000:0BB8 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 5 1 0000000000000000 100 0 0 10 0
   1: 00000000000000000000000001000000:0BB9 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 6 1 0000000000000000 100 0 0 10 0
`
	procUDP = `   sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode ref pointer drops
  100: 00000000:14E9 00000000:0000 07 00000000:00000000 00:00000000 00000000     0        0 7 2 0000000000000000 0
  101: 0F7FA8C0:A000 08080808:0035 01 00000000:00000000 00:00000000 00000000     0        0 8 2 0000000000000000 0
`
)

func TestListeners(t *testing.T) {
	proc := t.TempDir()
	os.Mkdir(filepath.Join(proc, "net"), 0o755)
	for name, body := range map[string]string{"tcp": procTCP, "tcp6": procTCP6, "udp": procUDP} {
		os.WriteFile(filepath.Join(proc, "net", name), []byte(body), 0o644)
	}
	rep, err := listeners(proc) // no udp6: skipped
	if err != nil {
		t.Fatal(err)
	}
	want := []agentcall.Listener{
		{Proto: "tcp", Addr: "0.0.0.0", Port: 8000},
		{Proto: "tcp", Addr: "127.0.0.1", Port: 5432},
		{Proto: "tcp", Addr: "::", Port: 3000},
		{Proto: "tcp", Addr: "::1", Port: 3001},
		{Proto: "udp", Addr: "0.0.0.0", Port: 5353},
	}
	if !slices.Equal(rep.Ports, want) {
		t.Errorf("listeners %+v, want %+v", rep.Ports, want)
	}
}

// However many sockets the guest has, the reply stays within its bound.
func TestListenersAreBounded(t *testing.T) {
	proc := t.TempDir()
	os.Mkdir(filepath.Join(proc, "net"), 0o755)
	b := []byte("header\n")
	for port := 1; port <= agentcall.MaxListeners+100; port++ {
		b = append(b, []byte("   0: 00000000:"+hex4(port)+" 00000000:0000 0A x\n")...)
	}
	os.WriteFile(filepath.Join(proc, "net", "tcp"), b, 0o644)
	rep, err := listeners(proc)
	if err != nil || len(rep.Ports) != agentcall.MaxListeners {
		t.Fatalf("%d listeners, %v; want %d", len(rep.Ports), err, agentcall.MaxListeners)
	}
}

func hex4(n int) string {
	const digits = "0123456789ABCDEF"
	return string([]byte{digits[n>>12&15], digits[n>>8&15], digits[n>>4&15], digits[n&15]})
}
