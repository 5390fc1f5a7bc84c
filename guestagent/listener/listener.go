// Package listener opens the one net.Listener the guest agent serves on:
// vsock (vz), a yamux session on a virtio-serial port (QEMU), or a unix
// socket (tests, development on a Linux host).
package listener

import (
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"os"
	"strconv"
	"strings"
	"syscall"

	"github.com/coworkhq/cowork/internal/agentwire"
)

// Auto is the listen address that picks the channel the VM has: vsock
// port agentwire.VsockPort when the guest has a vsock device (vz), else
// the virtio-serial port agentwire.SerialPort (QEMU); see chooseAuto.
const Auto = agentwire.ListenAuto

// autoSerial and autoVsock are where Auto chooses to listen.
const autoSerial = "serial://" + agentwire.SerialPort

func autoVsock() string { return fmt.Sprintf("vsock://:%d", agentwire.VsockPort) }

// Listen opens addr, one of:
//
//	vsock://:PORT              accepts only the host (CID 2)
//	serial://PORTNAME          yamux over the virtio-serial port PORTNAME
//	unix:///path/to/socket     mode 0600
//	auto                       vsock://:VsockPort with a vsock device, else serial://SerialPort (agentwire's)
func Listen(addr string, log *slog.Logger) (net.Listener, error) {
	if addr == Auto {
		chosen, err := chooseAuto(realProbes(), log)
		if err != nil {
			return nil, err
		}
		addr = chosen
		log.Info("listen auto", "chose", addr)
	}
	u, err := url.Parse(addr)
	if err != nil || u.Scheme == "" {
		return nil, fmt.Errorf("listen address %q: want vsock://:PORT, serial://NAME or unix:///PATH", addr)
	}
	switch u.Scheme {
	case "vsock":
		port, err := strconv.ParseUint(u.Port(), 10, 32)
		if err != nil || u.Hostname() != "" {
			return nil, fmt.Errorf("listen address %q: want vsock://:PORT, e.g. %s", addr, autoVsock())
		}
		return listenVsock(uint32(port), log)
	case "serial":
		if u.Host == "" || strings.ContainsAny(u.Host, "/") || u.Path != "" {
			return nil, fmt.Errorf("listen address %q: want serial://PORTNAME, e.g. %s", addr, autoSerial)
		}
		port, err := SysfsPort("/sys", "/dev", u.Host)
		if err != nil {
			return nil, fmt.Errorf("listen serial %s: %w", u.Host, err)
		}
		return ListenSerial(u.Host, port, log), nil
	case "unix":
		path := u.Path
		if u.Host != "" || path == "" {
			return nil, fmt.Errorf("listen address %q: want unix:///ABSOLUTE/PATH", addr)
		}
		return listenUnix(path)
	default:
		return nil, fmt.Errorf("listen address %q: unknown scheme %q; want vsock, serial or unix", addr, u.Scheme)
	}
}

// listenUnix listens on path, replacing a stale socket left by a crash but
// never one another process still serves.
func listenUnix(path string) (net.Listener, error) {
	if c, err := net.Dial("unix", path); err == nil {
		c.Close()
		return nil, fmt.Errorf("listen unix %s: another process is serving it", path)
	}
	if st, err := os.Lstat(path); err == nil {
		if st.Mode()&os.ModeSocket == 0 {
			return nil, fmt.Errorf("listen unix %s: exists and is not a socket", path)
		}
		if err := os.Remove(path); err != nil {
			return nil, fmt.Errorf("remove stale socket: %w", err)
		}
	}
	old := syscall.Umask(0o177)
	l, err := net.Listen("unix", path)
	syscall.Umask(old)
	if err != nil {
		return nil, err
	}
	return l, nil
}
