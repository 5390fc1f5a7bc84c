// Package agentwire holds what hostd and the guest agent must agree on to
// reach each other at all: where the agent listens (a vsock port under vz,
// a named virtio-serial port under QEMU), how a serial channel carries
// many streams (yamux, with one configuration and fixed roles), the file
// whose existence means the guest is provisioned, the provisioning unit
// and step file the agent reports on, and the preface of the
// channel `make bench` measures the transport with.
//
// Both sides import these facts from here rather than each writing its own
// copy, so changing one changes both binaries at once; the only way left
// for the two ends to disagree is a guest still running an older agent,
// which hostd already reports by comparing versions. (The yamux settings
// are each end's own, as yamux negotiates none of them, but both ends are
// tuned for the same bursts, so they share them too.)
//
// It is internal because it is a contract between two binaries built from
// one commit, not an API: nothing outside this module dials the agent. It
// imports nothing of cowork's, so both hostd and the guest can use it
// without linking the other side.
package agentwire

import (
	"fmt"
	"io"
	"log/slog"
	"strings"
	"time"

	"github.com/hashicorp/yamux"
)

const (
	// VsockPort is the vsock port the agent listens on in a guest with a
	// vsock device (vz), and the port hostd connects to.
	VsockPort uint32 = 1024

	// SerialPort is the name of the virtio-serial port the agent serves
	// on when the guest has no vsock device (QEMU): hostd gives QEMU's port
	// this name, and the agent finds the port by it in sysfs.
	SerialPort = "org.cowork.agent"

	// ListenAuto is the agent's --listen value that picks VsockPort when
	// the guest has a vsock device and SerialPort otherwise; the guest's
	// systemd unit, which the host writes, passes it.
	ListenAuto = "auto"

	// ProvisionedMarker is the file whose existence means the guest is
	// provisioned: the host's provisioning script makes it, and the agent
	// reports it in Info.
	ProvisionedMarker = "/var/lib/cowork/provisioned"

	// ProvisionUnit is the guest's systemd unit that runs the provisioning
	// script (image writes it); the agent reports its failure and its
	// last line of output while provisioning runs.
	ProvisionUnit = "cowork-provision.service"

	// ProvisionStepFile is where the provisioning script writes the step
	// it is at, one line, and the agent reads it for the host's live view.
	ProvisionStepFile = "/run/cowork/provision-step"

	// SourcePreface starts a channel that carries no protocol: the agent
	// answers "cowork-source N\n" with N zero bytes and closes. `make bench`
	// measures the channel itself with it (the same transport as the
	// agent's streams, none of the protocol).
	SourcePreface = "cowork-source "
)

// YamuxConfig is the session configuration both ends of the serial
// channel use, logging to log.
//
// One port carries every channel, and under emulation a burst (64
// processes each streaming 16 MiB, e2e/load_test.go) can hold a frame in
// the send queue, or a new stream's acknowledgement, for longer than
// yamux's defaults allow while both ends are alive and reading. yamux
// answers those timeouts by failing the stream or closing the whole
// session, so here only a peer that stops answering pings ends a session:
// its pings go unanswered for a minute (ConnectionWriteTimeout bounds the
// wait for a pong), and new streams wait without a timer of their own.
func YamuxConfig(log *slog.Logger) *yamux.Config {
	c := yamux.DefaultConfig()
	c.AcceptBacklog = 64
	c.KeepAliveInterval = 10 * time.Second
	c.ConnectionWriteTimeout = time.Minute
	c.MaxStreamWindowSize = 1 << 20
	c.StreamOpenTimeout = 0
	c.StreamCloseTimeout = 30 * time.Second
	c.LogOutput = nil
	c.Logger = yamuxLogger{log}
	return c
}

// HostSession starts hostd's end of a serial channel: the yamux client,
// the only end that opens streams. yamux itself does not check the roles
// (two clients would pick the same stream IDs once both opened streams),
// so they are fixed here, once, rather than by each caller.
// Both ends write each small frame in one write (frameConn).
func HostSession(conn io.ReadWriteCloser, log *slog.Logger) (*yamux.Session, error) {
	return yamux.Client(newFrameConn(conn), YamuxConfig(log))
}

// GuestSession starts the agent's end of a serial channel: the yamux
// server, which accepts the streams hostd opens.
func GuestSession(conn io.ReadWriteCloser, log *slog.Logger) (*yamux.Session, error) {
	return yamux.Server(newFrameConn(conn), YamuxConfig(log))
}

// yamuxLogger puts yamux's own complaints (a failed keepalive, a frame for
// a stream it does not know) in the log as warnings, all under the one
// message "yamux", so a rate-limited log (lograte, which the serial
// listener and hostd's agent channel use) limits them together: the other
// end can make yamux complain in a loop.
type yamuxLogger struct{ log *slog.Logger }

func (l yamuxLogger) say(s string) { l.log.Warn("yamux", "said", strings.TrimSpace(s)) }

func (l yamuxLogger) Print(v ...any)                 { l.say(fmt.Sprint(v...)) }
func (l yamuxLogger) Printf(format string, v ...any) { l.say(fmt.Sprintf(format, v...)) }
func (l yamuxLogger) Println(v ...any)               { l.say(fmt.Sprintln(v...)) }
