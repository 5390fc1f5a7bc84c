package listener

import (
	"bytes"
	"errors"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/yamux"
	"github.com/mdlayher/vsock"

	"github.com/coworkhq/cowork/internal/agentwire"
	"github.com/coworkhq/cowork/internal/lograte"
)

var quiet = slog.New(slog.NewTextHandler(io.Discard, nil))

func TestBadAddresses(t *testing.T) {
	for addr, want := range map[string]string{
		"":                     "want vsock://:PORT",
		"tcp://:80":            `unknown scheme "tcp"`,
		"vsock://:x":           "vsock://:PORT",
		"vsock://5:1024":       "vsock://:PORT",
		"serial://":            "serial://PORTNAME",
		"serial://a/b":         "serial://PORTNAME",
		"unix://relative/path": "unix:///ABSOLUTE/PATH",
		"/just/a/path":         "want vsock://:PORT",
	} {
		_, err := Listen(addr, quiet)
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%q: got %v, want %q", addr, err, want)
		}
	}
}

func TestUnixReplacesStaleSocketButNotALiveOne(t *testing.T) {
	dir, _ := os.MkdirTemp("", "lt")
	defer os.RemoveAll(dir)
	path := filepath.Join(dir, "a.sock")
	// A socket file left by a crash: nothing listens on it.
	stale, _ := net.Listen("unix", path)
	stale.(*net.UnixListener).SetUnlinkOnClose(false)
	stale.Close()

	l, err := Listen("unix://"+path, quiet)
	if err != nil {
		t.Fatalf("stale socket not replaced: %v", err)
	}
	defer l.Close()
	if st, _ := os.Stat(path); st.Mode().Perm() != 0o600 {
		t.Errorf("socket mode %v, want 0600", st.Mode().Perm())
	}
	if _, err := Listen("unix://"+path, quiet); err == nil || !strings.Contains(err.Error(), "another process is serving it") {
		t.Fatalf("a live socket was taken over: %v", err)
	}
	os.WriteFile(filepath.Join(dir, "file"), nil, 0o644)
	if _, err := Listen("unix://"+filepath.Join(dir, "file"), quiet); err == nil || !strings.Contains(err.Error(), "not a socket") {
		t.Fatalf("a regular file was replaced: %v", err)
	}
}

func TestNoVsockDeviceIsAClearError(t *testing.T) {
	if err := checkContextID(noContextID, nil); err == nil || !strings.Contains(err.Error(), "no vsock device") {
		t.Errorf("CID 4294967295: %v", err)
	}
	if err := checkContextID(0, errors.New("open /dev/vsock: no such file or directory")); err == nil || !strings.Contains(err.Error(), "serial://"+agentwire.SerialPort) {
		t.Errorf("error: %v", err)
	}
	if err := checkContextID(3, nil); err != nil {
		t.Errorf("a real CID refused: %v", err)
	}
}

// fakeVsock hands out connections that claim to come from given CIDs.
type fakeVsock struct {
	net.Listener
	cids []uint32
}

type addrConn struct {
	net.Conn
	remote net.Addr
}

func (c addrConn) RemoteAddr() net.Addr { return c.remote }

func (l *fakeVsock) Accept() (net.Conn, error) {
	if len(l.cids) == 0 {
		return nil, net.ErrClosed
	}
	cid := l.cids[0]
	l.cids = l.cids[1:]
	a, _ := net.Pipe()
	return addrConn{a, &vsock.Addr{ContextID: cid, Port: 5000}}, nil
}

func TestVsockAcceptsOnlyTheHost(t *testing.T) {
	l := &hostOnly{Listener: &fakeVsock{cids: []uint32{3, 1, vsock.Host, 7}}, log: quiet}
	c, err := l.Accept()
	if err != nil {
		t.Fatal(err)
	}
	if cid := c.RemoteAddr().(*vsock.Addr).ContextID; cid != vsock.Host {
		t.Fatalf("accepted CID %d before the host's", cid)
	}
	if _, err := l.Accept(); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("accepted CID 7: %v", err)
	}
}

// fakePort behaves like a virtio-serial port: reads return EOF at once
// while no host is connected, and the host can come and go.
type fakePort struct {
	mu   sync.Mutex
	host net.Conn // the guest's end of the current host connection
}

// connect attaches a new host and returns its end.
func (p *fakePort) connect() net.Conn {
	g, h := net.Pipe()
	p.mu.Lock()
	p.host = g
	p.mu.Unlock()
	return h
}

func (p *fakePort) disconnect(h net.Conn) {
	p.mu.Lock()
	p.host = nil
	p.mu.Unlock()
	h.Close()
}

func (p *fakePort) current() net.Conn {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.host
}

func (p *fakePort) Read(b []byte) (int, error) {
	g := p.current()
	if g == nil {
		time.Sleep(time.Millisecond)
		return 0, io.EOF
	}
	n, err := g.Read(b)
	if err != nil && !errors.Is(err, os.ErrDeadlineExceeded) {
		return n, io.EOF
	}
	return n, err
}

func (p *fakePort) Write(b []byte) (int, error) {
	for {
		if g := p.current(); g != nil {
			return g.Write(b)
		}
		time.Sleep(time.Millisecond) // a port with no host blocks writes
	}
}

func (p *fakePort) SetDeadline(t time.Time) error {
	if g := p.current(); g != nil {
		return g.SetDeadline(t)
	}
	return nil
}

func roundTrip(t *testing.T, l net.Listener, sess *yamux.Session) {
	t.Helper()
	accepted := make(chan net.Conn, 1)
	go func() {
		c, err := l.Accept()
		if err == nil {
			accepted <- c
		}
	}()
	s, err := sess.Open()
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	var g net.Conn
	select {
	case g = <-accepted:
	case <-time.After(10 * time.Second):
		t.Fatal("stream never accepted")
	}
	defer g.Close()
	go g.Write([]byte("ping"))
	buf := make([]byte, 4)
	if _, err := io.ReadFull(s, buf); err != nil || string(buf) != "ping" {
		t.Fatalf("read %q %v", buf, err)
	}
}

func TestSerialSurvivesTheHostReconnecting(t *testing.T) {
	port := &fakePort{}
	l := ListenSerial(agentwire.SerialPort, port, quiet)
	defer l.Close()
	time.Sleep(20 * time.Millisecond) // the listener polls a port with no host
	for i := range 3 {
		h := port.connect()
		sess, err := agentwire.HostSession(h, slog.New(slog.DiscardHandler))
		if err != nil {
			t.Fatal(err)
		}
		roundTrip(t, l, sess)
		roundTrip(t, l, sess)
		// The host goes away (hostd restarts); the next round needs a new session.
		sess.Close()
		port.disconnect(h)
		t.Logf("session %d done", i)
		time.Sleep(20 * time.Millisecond)
	}
	l.Close()
	if _, err := l.Accept(); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("Accept after Close: %v", err)
	}
}

func TestSerialFindsThePortBySysfsName(t *testing.T) {
	sys, dev := t.TempDir(), t.TempDir()
	for port, name := range map[string]string{"vport0p1": "org.qemu.guest_agent.0", "vport1p1": agentwire.SerialPort} {
		os.MkdirAll(filepath.Join(sys, "class/virtio-ports", port), 0o755)
		os.WriteFile(filepath.Join(sys, "class/virtio-ports", port, "name"), []byte(name+"\n"), 0o644)
		os.WriteFile(filepath.Join(dev, port), nil, 0o600) // stands in for the device node
	}
	got, err := findPort(sys, dev, agentwire.SerialPort)
	if err != nil || got != filepath.Join(dev, "vport1p1") {
		t.Fatalf("got %q %v", got, err)
	}
	if _, err := findPort(sys, dev, "org.other"); err == nil || !strings.Contains(err.Error(), "no virtio-serial port named org.other") {
		t.Fatalf("missing port: %v", err)
	}
	if _, err := SysfsPort(sys, dev, "org.other"); err == nil {
		t.Fatal("opening a port that does not exist succeeded")
	}
}

func TestSerialCreatesAMissingDeviceNode(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("mknod needs root")
	}
	sys, dev := t.TempDir(), t.TempDir()
	sysPort := filepath.Join(sys, "class/virtio-ports/vport2p1")
	os.MkdirAll(sysPort, 0o755)
	os.WriteFile(filepath.Join(sysPort, "name"), []byte(agentwire.SerialPort+"\n"), 0o644)
	os.WriteFile(filepath.Join(sysPort, "dev"), []byte("1:3\n"), 0o644) // the numbers of /dev/null
	port, err := SysfsPort(sys, dev, agentwire.SerialPort)
	if err != nil {
		t.Fatal(err)
	}
	defer port.(*os.File).Close()
	if n, err := port.Write([]byte("x")); n != 1 || err != nil {
		t.Fatalf("write to the created node: %d %v", n, err)
	}
}

// A peer that breaks session after session (garbage instead of yamux)
// makes yamux complain each time; the log gets a burst, not a line each.
func TestSerialYamuxComplaintsAreRateLimited(t *testing.T) {
	port := &fakePort{}
	var out syncLog
	l := ListenSerial(agentwire.SerialPort, port, slog.New(slog.NewTextHandler(&out, nil)))
	defer l.Close()
	const sessions = 80
	for range sessions {
		h := port.connect()
		h.SetDeadline(time.Now().Add(time.Minute))
		// Returns once the listener has read it (the port is synchronous);
		// version 255 is not yamux, and the session it reaches ends.
		if _, err := h.Write(bytes.Repeat([]byte{0xff}, 12)); err != nil {
			t.Fatal(err)
		}
		port.disconnect(h)
	}
	if n := out.count("msg=yamux"); n < lograte.DefaultBurst {
		t.Fatalf("only %d yamux lines: the sessions were not broken", n)
	}
	if n := out.count("\n"); n > 2*lograte.DefaultBurst+10 {
		t.Errorf("%d broken sessions wrote %d log lines", sessions, n)
	}
}

type syncLog struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncLog) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncLog) count(sub string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return strings.Count(s.b.String(), sub)
}
