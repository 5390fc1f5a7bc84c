package qemu

import (
	"bytes"
	"context"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/coworkhq/cowork/internal/agentwire"
	"github.com/coworkhq/cowork/internal/lograte"
	"github.com/coworkhq/cowork/internal/syncbuf"
)

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
	var out syncbuf.Buffer
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
	if n := strings.Count(out.String(), "msg=yamux"); n < lograte.DefaultBurst {
		t.Fatalf("only %d yamux lines: the guest did not break the sessions", n)
	}
	lines := strings.Count(out.String(), "\n")
	if lines > 2*lograte.DefaultBurst+10 {
		t.Errorf("%d sessions broken by the guest wrote %d log lines", sessions, lines)
	}
}

// After a burst of output, an idle stream (a client's pooled exec
// connection) gives back its receive buffer: hostd's heap does not keep
// a window's worth of bytes per idle stream.
func TestIdleStreamsDropTheirReceiveBuffers(t *testing.T) {
	old := idleShrink
	idleShrink = time.Hour // no stream goes idle before the test says so
	defer func() { idleShrink = old }()
	dir, err := os.MkdirTemp("", "ach")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(dir)
	sock := filepath.Join(dir, "agent.sock")
	ln, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	// yamux sends a stream's first window (256 KiB) as one frame, which
	// lands in one buffer of that size before any read.
	const streams, burst = 8, 256 << 10
	go func() {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		sess, err := agentwire.GuestSession(c, slog.New(slog.DiscardHandler))
		if err != nil {
			return
		}
		for {
			s, err := sess.Accept()
			if err != nil {
				return
			}
			go s.Write(make([]byte, burst))
		}
	}()
	a := newAgentChannel(sock, slog.New(slog.DiscardHandler))
	defer a.close()
	heap := func() uint64 {
		runtime.GC()
		runtime.GC()
		var m runtime.MemStats
		runtime.ReadMemStats(&m)
		return m.HeapAlloc
	}
	base := heap()
	var conns []net.Conn
	for range streams {
		c, err := a.dial(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		conns = append(conns, c)
	}
	for _, c := range conns {
		if _, err := io.ReadFull(c, make([]byte, burst)); err != nil {
			t.Fatal(err)
		}
	}
	held := heap()
	if held < base+streams*burst*3/4 {
		t.Fatalf("heap %d bytes after the reads, %d before: the streams' buffers are not there to drop", held, base)
	}
	for _, c := range conns {
		c.(*shrinkingStream).timer.Reset(time.Millisecond) // idle now
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		now := heap()
		if held-min(now, held) >= streams*burst*3/4 {
			return // most of the buffers went back
		}
		if time.Now().After(deadline) {
			t.Fatalf("idle streams still hold their buffers: heap %d bytes, was %d after the reads", now, held)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
