package listener

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"golang.org/x/sys/unix"

	"github.com/coworkhq/cowork/internal/agentwire"
	"github.com/coworkhq/cowork/internal/lograte"
)

// Port is an open virtio-serial port. How such a port behaves decides
// this file's design:
//   - a read returns EOF at once, again and again, while no host is
//     connected to its chardev, and data again once one is;
//   - closing the port drops data the host already sent, so it is opened
//     once and never closed while the agent runs;
//   - a write blocks while no host is connected.
type Port interface {
	io.ReadWriter
	// SetDeadline interrupts blocked reads and writes (os.File has it).
	SetDeadline(time.Time) error
}

// SysfsPort finds the virtio-serial port named name through
// sysRoot/class/virtio-ports/*/name and opens its node in devRoot,
// creating the node when no devtmpfs or udev did.
func SysfsPort(sysRoot, devRoot, name string) (Port, error) {
	dev, err := findPort(sysRoot, devRoot, name)
	if err != nil {
		return nil, err
	}
	return os.OpenFile(dev, os.O_RDWR, 0)
}

func findPort(sysRoot, devRoot, name string) (string, error) {
	names, _ := filepath.Glob(filepath.Join(sysRoot, "class/virtio-ports/*/name"))
	for _, n := range names {
		b, err := os.ReadFile(n)
		if err != nil || strings.TrimSpace(string(b)) != name {
			continue
		}
		port := filepath.Dir(n)
		dev := filepath.Join(devRoot, filepath.Base(port))
		if _, err := os.Stat(dev); err == nil {
			return dev, nil
		}
		return dev, mknodFromSysfs(dev, filepath.Join(port, "dev"))
	}
	return "", fmt.Errorf("no virtio-serial port named %s (looked in %s/class/virtio-ports); is the VM started with it?", name, sysRoot)
}

// mknodFromSysfs creates a character device node from a sysfs "MAJ:MIN" file.
func mknodFromSysfs(dev, sysDev string) error {
	b, err := os.ReadFile(sysDev)
	if err != nil {
		return fmt.Errorf("create %s: %w", dev, err)
	}
	maj, min, ok := strings.Cut(strings.TrimSpace(string(b)), ":")
	ma, err1 := strconv.ParseUint(maj, 10, 32)
	mi, err2 := strconv.ParseUint(min, 10, 32)
	if !ok || err1 != nil || err2 != nil {
		return fmt.Errorf("create %s: bad device number %q in %s", dev, b, sysDev)
	}
	if err := unix.Mknod(dev, unix.S_IFCHR|0o600, int(unix.Mkdev(uint32(ma), uint32(mi)))); err != nil {
		return fmt.Errorf("create %s: %w", dev, err)
	}
	return nil
}

// ListenSerial serves yamux streams from the host over an open port as a
// net.Listener. Each time the host connects it gets a new session; when it
// goes away (the port reads EOF) or the session breaks, the listener waits
// for the host's next connection on the same open port. What it and its
// sessions log is rate-limited (lograte) across sessions.
func ListenSerial(name string, port Port, log *slog.Logger) net.Listener {
	l := &serialListener{
		name:   name,
		port:   port,
		conns:  make(chan net.Conn),
		closed: make(chan struct{}),
		log:    lograte.Logger(log),
	}
	go l.serve()
	return l
}

type serialListener struct {
	name   string
	port   Port
	conns  chan net.Conn
	closed chan struct{}
	once   sync.Once
	log    *slog.Logger
}

// hostPoll is how often a port with no host is read for the host's
// return. A resumed guest finds its host gone and waits out this poll
// before it answers, so it is short; a read that finds no host costs
// the guest one system call.
const hostPoll = 10 * time.Millisecond

func (l *serialListener) serve() {
	buf := make([]byte, 64<<10)
	for {
		// Wait for the host: its first bytes open the next session.
		n, err := l.port.Read(buf)
		if l.isClosed() {
			return
		}
		if n == 0 {
			if err != nil && !errors.Is(err, io.EOF) && !errors.Is(err, os.ErrDeadlineExceeded) {
				l.log.Warn("read serial port", "port", l.name, "err", err)
			}
			time.Sleep(hostPoll)
			continue
		}
		l.session(&sessionConn{port: l.port, pending: append([]byte(nil), buf[:n]...), done: make(chan struct{})})
		if l.isClosed() {
			return
		}
	}
}

// session runs one yamux session until the host leaves or it breaks.
func (l *serialListener) session(c *sessionConn) {
	sess, err := agentwire.GuestSession(c, l.log)
	if err != nil {
		l.log.Error("yamux session", "err", err)
		return
	}
	stop := make(chan struct{})
	go func() {
		select {
		case <-l.closed:
			sess.Close()
		case <-stop:
		}
	}()
	defer close(stop)
	defer sess.Close()
	for {
		s, err := sess.Accept()
		if err != nil {
			return
		}
		select {
		case l.conns <- s:
		case <-l.closed:
			s.Close()
			return
		}
	}
}

func (l *serialListener) isClosed() bool { return closed(l.closed) }

// closed says whether ch is closed, without waiting.
func closed(ch <-chan struct{}) bool {
	select {
	case <-ch:
		return true
	default:
		return false
	}
}

func (l *serialListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.conns:
		return c, nil
	case <-l.closed:
		return nil, net.ErrClosed // as net's listeners do after Close
	}
}

// Close stops accepting; the port itself stays open (closing it would drop
// data), and the process's exit releases it.
func (l *serialListener) Close() error {
	l.once.Do(func() {
		close(l.closed)
		_ = l.port.SetDeadline(time.Now()) // unblock serve's read
	})
	return nil
}

func (l *serialListener) Addr() net.Addr { return serialAddr(l.name) }

type serialAddr string

func (a serialAddr) Network() string { return "serial" }
func (a serialAddr) String() string  { return string(a) }

// sessionConn is one session's view of the port: the bytes that announced
// the host first, then the port itself, until the host leaves. Closing it
// interrupts a blocked read or write but leaves the port open; the port
// takes the next session's I/O again the moment this one's last read or
// write has returned (a resumed guest's next host is waiting on it).
type sessionConn struct {
	port    Port
	pending []byte
	done    chan struct{}
	once    sync.Once

	mu     sync.Mutex
	active int // reads and writes on the port under way
}

// begin counts an I/O on the port, unless the session is closed.
func (c *sessionConn) begin() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.isDone() {
		return false
	}
	c.active++
	return true
}

// end uncounts an I/O; the last one of a closed session frees the port.
func (c *sessionConn) end() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.active--; c.active == 0 && c.isDone() {
		_ = c.port.SetDeadline(time.Time{})
	}
}

func (c *sessionConn) Read(p []byte) (int, error) {
	if len(c.pending) > 0 {
		n := copy(p, c.pending)
		c.pending = c.pending[n:]
		return n, nil
	}
	if !c.begin() {
		return 0, io.EOF
	}
	n, err := c.port.Read(p)
	c.end()
	if n == 0 && err == nil {
		err = io.EOF
	}
	if c.isDone() {
		return n, io.EOF
	}
	return n, err // io.EOF: the host went away
}

func (c *sessionConn) Write(p []byte) (int, error) {
	if !c.begin() {
		return 0, io.ErrClosedPipe
	}
	defer c.end()
	return c.port.Write(p)
}

// Close ends the session's I/O: what is under way is cut by a deadline,
// which is lifted once it has returned (at once when none is).
func (c *sessionConn) Close() error {
	c.once.Do(func() {
		c.mu.Lock()
		defer c.mu.Unlock()
		close(c.done)
		if c.active > 0 {
			_ = c.port.SetDeadline(time.Now()) // unblock this session's I/O
		}
	})
	return nil
}

func (c *sessionConn) isDone() bool { return closed(c.done) }
