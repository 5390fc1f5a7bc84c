package guestagent

import (
	"io"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// The lent agent's socket carries each connection to the host's side,
// any guest user may use it, and it goes when the host stops lending.
func TestLendSSHAgent(t *testing.T) {
	host, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer host.Close()
	go func() {
		for {
			c, err := host.Accept()
			if err != nil {
				return
			}
			go func() { io.Copy(c, c); c.Close() }()
		}
	}()
	sock := filepath.Join(t.TempDir(), "run", "ssh-agent.sock")
	s := New(Options{SSHAgentSocket: sock})
	if _, err := s.lendSSHAgent("somewhere"); err == nil {
		t.Error("an address that is no IP:port was taken")
	}
	got, err := s.lendSSHAgent(host.Addr().String())
	if err != nil || got != sock || s.sshAgentSocket() != sock {
		t.Fatalf("lend: %q %v", got, err)
	}
	if st, err := os.Stat(sock); err != nil || st.Mode().Perm() != 0o666 {
		t.Errorf("the socket: %v %v, want mode 0666", st, err)
	}
	c, err := net.Dial("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	c.SetDeadline(time.Now().Add(5 * time.Second))
	io.WriteString(c, "ping")
	b := make([]byte, 4)
	if _, err := io.ReadFull(c, b); err != nil || string(b) != "ping" {
		t.Errorf("through the socket: %q %v", b, err)
	}
	c.Close()
	// Lent again (a resume): the socket is made anew.
	if _, err := s.lendSSHAgent(host.Addr().String()); err != nil {
		t.Fatal(err)
	}
	if _, err := s.lendSSHAgent(""); err != nil || s.sshAgentSocket() != "" {
		t.Fatalf("stop: %v, socket %q", err, s.sshAgentSocket())
	}
	if c, err := net.Dial("unix", sock); err == nil {
		c.Close()
		t.Error("the socket answers after the host stopped lending")
	}
}
