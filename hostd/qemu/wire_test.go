package qemu

import (
	"context"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/coworkhq/cowork/guestagent/listener"
	"github.com/coworkhq/cowork/internal/agentwire"
)

// hostd's end of the agent channel and the agent's end, each exactly as it
// runs (agentChannel here, listener.ListenSerial in the guest), joined by a
// unix socket standing in for QEMU's chardev and the guest's port: streams
// opened by hostd reach the agent's Accept and carry bytes both ways. It
// fails when the two ends stop speaking the same thing on the port: one
// side framing or announcing its streams otherwise (a preface, another
// multiplexer, a version byte), or the guest's listener not handing
// hostd's streams on.
//
// Only this test pairs them: hostd/qemu itself does not import the guest's
// listener (agentwire holds what both need).
func TestTheHostAndTheAgentSpeakTheSameWire(t *testing.T) {
	dir, err := os.MkdirTemp("", "wire") // short: unix socket paths are limited
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(dir)
	sock := filepath.Join(dir, "agent.sock")
	chardev, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	defer chardev.Close()
	quiet := slog.New(slog.DiscardHandler)
	guest := make(chan net.Listener, 1)
	go func() {
		c, err := chardev.Accept()
		if err != nil {
			close(guest)
			return
		}
		// The unix connection is the guest's open virtio-serial port.
		guest <- listener.ListenSerial(agentwire.SerialPort, c.(*net.UnixConn), quiet)
	}()

	host := newAgentChannel(sock, quiet)
	defer host.close()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()

	const streams = 3 // more than one: each is its own yamux stream
	opened := make([]net.Conn, streams)
	for i := range opened {
		s, err := host.dial(ctx)
		if err != nil {
			t.Fatalf("hostd opens stream %d: %v", i, err)
		}
		defer s.Close()
		opened[i] = s
		if _, err := s.Write([]byte{'h', byte('0' + i)}); err != nil {
			t.Fatalf("hostd writes on stream %d: %v", i, err)
		}
	}
	var l net.Listener
	select {
	case l = <-guest:
	case <-ctx.Done():
		t.Fatal("hostd never connected to the chardev")
	}
	if l == nil {
		t.Fatal("the chardev stand-in failed")
	}
	defer l.Close()

	accepted := make(chan net.Conn, streams)
	go func() {
		for range streams {
			c, err := l.Accept()
			if err != nil {
				close(accepted)
				return
			}
			accepted <- c
		}
	}()
	for range streams {
		var c net.Conn
		select {
		case c = <-accepted:
		case <-ctx.Done():
			t.Fatal("the agent accepted no stream from hostd: the two ends do not speak the same wire")
		}
		if c == nil {
			t.Fatal("the agent's listener failed before accepting hostd's streams")
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(time.Minute))
		buf := make([]byte, 2)
		if _, err := io.ReadFull(c, buf); err != nil || buf[0] != 'h' {
			t.Fatalf("the agent read %q, %v", buf, err)
		}
		i := int(buf[1] - '0')
		if i < 0 || i >= streams {
			t.Fatalf("the agent read %q: no such stream", buf)
		}
		if _, err := c.Write([]byte{'g', buf[1]}); err != nil {
			t.Fatalf("the agent answers stream %d: %v", i, err)
		}
	}
	for i, s := range opened {
		s.SetDeadline(time.Now().Add(time.Minute))
		buf := make([]byte, 2)
		if _, err := io.ReadFull(s, buf); err != nil || buf[0] != 'g' || int(buf[1]-'0') != i {
			t.Fatalf("hostd read %q, %v on stream %d", buf, err, i)
		}
	}
}
