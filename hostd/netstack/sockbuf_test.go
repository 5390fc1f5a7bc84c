package netstack

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net/netip"
	"strings"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"
)

// A system that takes buffers up to limit bytes, and refuses bigger ones
// with ENOBUFS, as macOS does above kern.ipc.maxsockbuf.
func capped(limit int, got map[int]int) func(fd, level, opt, value int) error {
	return func(fd, level, opt, value int) error {
		if value > limit {
			return syscall.ENOBUFS
		}
		got[opt] = value
		return nil
	}
}

func TestFrameBuffersFitTheSystem(t *testing.T) {
	got := map[int]int{}
	if err := sizeFrameBuffers(3, capped(8<<20, got)); err != nil || got[unix.SO_SNDBUF] != 1<<20 || got[unix.SO_RCVBUF] != 4<<20 {
		t.Errorf("a roomy system: %v, %v; want 1 MiB and 4 MiB", got, err)
	}
	got = map[int]int{}
	if err := sizeFrameBuffers(3, capped(1<<20, got)); err != nil || got[unix.SO_SNDBUF] != 256<<10 || got[unix.SO_RCVBUF] != 1<<20 {
		t.Errorf("a system capped at 1 MiB: %v, %v; want 256 KiB and 1 MiB, receive four times send", got, err)
	}
	err := sizeFrameBuffers(3, capped(64<<10, map[int]int{}))
	if !errors.Is(err, syscall.ENOBUFS) || !strings.Contains(err.Error(), "kern.ipc.maxsockbuf") {
		t.Errorf("a system that takes too little: %v", err)
	}
}

// Attach fails, saying why, when the socket's buffers cannot be sized;
// it used to ignore the error and run a NIC that drops bursts.
func TestAttachChecksTheBuffers(t *testing.T) {
	defer func(s func(int, int, int, int) error) { setsockopt = s }(setsockopt)
	setsockopt = capped(0, map[int]int{})
	n, err := New(Config{GuestMAC: GuestMAC("buffers"), LANs: []netip.Prefix{}, Resolvers: []string{}, Log: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	defer n.Close()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	if f, err := n.Attach(ctx); err == nil {
		f.Close()
		t.Fatal("Attach succeeded with buffers the system refused")
	} else if !strings.Contains(err.Error(), "socket buffers") {
		t.Errorf("Attach: %v", err)
	}
}
