package listener

import (
	"fmt"
	"log/slog"
	"net"

	"github.com/mdlayher/vsock"
)

// noContextID is what the kernel reports as the local CID when the guest has
// no vsock device at all; a successful vsock.Listen proves nothing then.
const noContextID = 0xFFFFFFFF

func listenVsock(port uint32, log *slog.Logger) (net.Listener, error) {
	cid, err := vsock.ContextID()
	if err := checkContextID(cid, err); err != nil {
		return nil, fmt.Errorf("listen vsock port %d: %w", port, err)
	}
	l, err := vsock.ListenContextID(cid, port, nil)
	if err != nil {
		return nil, fmt.Errorf("listen vsock port %d: %w", port, err)
	}
	return &hostOnly{Listener: l, log: log}, nil
}

// hostOnly drops connections from anything but the host: the agent runs
// commands as any user, so a process inside the guest must not reach it.
type hostOnly struct {
	net.Listener
	log *slog.Logger
}

func (l *hostOnly) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		if a, ok := c.RemoteAddr().(*vsock.Addr); ok && a.ContextID == vsock.Host {
			return c, nil
		}
		l.log.Warn("refused vsock connection from outside the host", "remote", c.RemoteAddr())
		c.Close()
	}
}

// checkContextID tells a guest with a vsock device from one without.
func checkContextID(cid uint32, err error) error {
	if err != nil {
		return fmt.Errorf("this guest has no vsock device (%v); use --listen %s", err, autoSerial)
	}
	if cid == noContextID {
		return fmt.Errorf("this guest has no vsock device (context id %d); use --listen %s", cid, autoSerial)
	}
	return nil
}
