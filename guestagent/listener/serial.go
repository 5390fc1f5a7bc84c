package listener

import (
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

	"github.com/hashicorp/yamux"
	"golang.org/x/sys/unix"
)

// YamuxConfig is the session configuration both ends of the serial channel
// use. Keepalives notice a host that vanished without closing its end.
func YamuxConfig() *yamux.Config {
	c := yamux.DefaultConfig()
	c.AcceptBacklog = 64
	c.KeepAliveInterval = 10 * time.Second
	c.MaxStreamWindowSize = 1 << 20
	c.StreamOpenTimeout = 30 * time.Second
	c.StreamCloseTimeout = 30 * time.Second
	c.LogOutput = io.Discard
	return c
}

// PortOpener opens the serial device afresh; it is called again each time
// the host end goes away and comes back.
type PortOpener func() (io.ReadWriteCloser, error)

// SysfsPorts finds the virtio-serial port named name through
// sysRoot/class/virtio-ports/*/name and opens its node in devRoot, creating
// the node when no udev did.
func SysfsPorts(sysRoot, devRoot string) func(name string) PortOpener {
	return func(name string) PortOpener {
		return func() (io.ReadWriteCloser, error) {
			dev, err := findPort(sysRoot, devRoot, name)
			if err != nil {
				return nil, err
			}
			return os.OpenFile(dev, os.O_RDWR, 0)
		}
	}
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

// ListenSerial serves yamux streams from the host over the named port as a
// net.Listener. When the host end closes or the session breaks, the port is
// reopened and a new session awaits the host's next connection.
func ListenSerial(name string, ports func(string) PortOpener, log *slog.Logger) (net.Listener, error) {
	open := ports(name)
	// Fail fast when the port does not exist at all; later opens retry.
	rwc, err := open()
	if err != nil {
		return nil, fmt.Errorf("listen serial %s: %w", name, err)
	}
	l := &serialListener{
		name:   name,
		open:   open,
		conns:  make(chan net.Conn),
		closed: make(chan struct{}),
		log:    log,
	}
	go l.serve(rwc)
	return l, nil
}

type serialListener struct {
	name   string
	open   PortOpener
	conns  chan net.Conn
	closed chan struct{}
	once   sync.Once
	log    *slog.Logger

	mu  sync.Mutex
	cur io.Closer // the open port, closed by Close
}

func (l *serialListener) serve(rwc io.ReadWriteCloser) {
	backoff := 50 * time.Millisecond
	for {
		if rwc != nil {
			began := time.Now()
			l.session(rwc)
			if time.Since(began) > time.Second {
				backoff = 50 * time.Millisecond
			}
		}
		select {
		case <-l.closed:
			return
		case <-time.After(backoff):
		}
		backoff = min(backoff*2, time.Second)
		var err error
		if rwc, err = l.open(); err != nil {
			l.log.Warn("reopen serial port", "port", l.name, "err", err)
			rwc = nil
		}
	}
}

// session runs one yamux session on an open port until it ends.
func (l *serialListener) session(rwc io.ReadWriteCloser) {
	l.mu.Lock()
	select {
	case <-l.closed:
		l.mu.Unlock()
		rwc.Close()
		return
	default:
	}
	l.cur = rwc
	l.mu.Unlock()
	defer rwc.Close()

	sess, err := yamux.Server(rwc, YamuxConfig())
	if err != nil {
		l.log.Error("yamux session", "err", err)
		return
	}
	defer sess.Close()
	for {
		c, err := sess.Accept()
		if err != nil {
			return
		}
		select {
		case l.conns <- c:
		case <-l.closed:
			c.Close()
			return
		}
	}
}

func (l *serialListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.conns:
		return c, nil
	case <-l.closed:
		return nil, errClosed
	}
}

func (l *serialListener) Close() error {
	l.once.Do(func() {
		l.mu.Lock()
		close(l.closed)
		if l.cur != nil {
			l.cur.Close()
		}
		l.mu.Unlock()
	})
	return nil
}

func (l *serialListener) Addr() net.Addr { return serialAddr(l.name) }

type serialAddr string

func (a serialAddr) Network() string { return "serial" }
func (a serialAddr) String() string  { return string(a) }
