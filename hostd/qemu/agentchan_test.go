package qemu

import (
	"bytes"
	"context"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/coworkhq/cowork/internal/lograte"
)

// syncBuffer is a log destination safe for yamux's goroutines.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) count(sub string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return strings.Count(s.b.String(), sub)
}

// A guest that answers every session on the agent's port with garbage
// makes yamux complain once a session, and hostd open a new one each
// time: the log gets a burst of lines, not one per session.
func TestAGuestBreakingTheChannelCannotFloodTheLog(t *testing.T) {
	dir, err := os.MkdirTemp("", "ach") // short: unix socket paths are limited
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(dir)
	sock := filepath.Join(dir, "agent.sock")
	ln, err := net.Listen("unix", sock) // stands in for QEMU's chardev
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				c.Write(bytes.Repeat([]byte{0xff}, 64)) // not yamux: version 255
				c.SetReadDeadline(time.Now().Add(10 * time.Second))
				buf := make([]byte, 512)
				for {
					if _, err := c.Read(buf); err != nil {
						return
					}
				}
			}()
		}
	}()
	var out syncBuffer
	a := newAgentChannel(sock, slog.New(slog.NewTextHandler(&out, nil)))
	defer a.close()
	const sessions = 300
	for range sessions {
		s, err := a.dial(context.Background())
		if err == nil {
			// yamux reads the garbage and ends the session; wait for it, so
			// that the next dial opens a new one.
			sess := a.current()
			deadline := time.Now().Add(time.Minute)
			for sess != nil && !sess.IsClosed() && time.Now().Before(deadline) {
				time.Sleep(time.Millisecond)
			}
			s.Close()
		}
	}
	// Each broken session made yamux say something; most of it is held back.
	if n := out.count("msg=yamux"); n < lograte.DefaultBurst {
		t.Fatalf("only %d yamux lines: the guest did not break the sessions", n)
	}
	lines := out.count("\n")
	if lines > 2*lograte.DefaultBurst+10 {
		t.Errorf("%d sessions broken by the guest wrote %d log lines", sessions, lines)
	}
}
