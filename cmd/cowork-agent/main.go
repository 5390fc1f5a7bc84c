// Command cowork-agent is the daemon inside a cowork guest: it serves the
// agent API on one listener and runs the commands the host asks for.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"runtime/debug"
	"strings"
	"syscall"
	"time"

	"github.com/coworkhq/cowork/guestagent"
	"github.com/coworkhq/cowork/guestagent/listener"
	"github.com/coworkhq/cowork/internal/agentwire"
	"github.com/coworkhq/cowork/internal/buildinfo"
)

// memoryLimit is the agent's soft heap limit unless GOMEMLIMIT says
// otherwise. The agent shares the guest's memory with the user's work; by
// default Go lets the heap double between collections, which after a burst
// of 64 large streams (about 4 MiB each in flight) let it grow past
// 500 MiB (e2e/load_test.go). A lower limit made the collector run
// without pause during such a burst, starving new connections.
const memoryLimit = 192 << 20

func main() {
	if os.Getenv("GOMEMLIMIT") == "" {
		debug.SetMemoryLimit(memoryLimit)
	}
	if err := run(os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, "cowork-agent:", err)
		os.Exit(1)
	}
}

func run(args []string) error {
	fs := flag.NewFlagSet("cowork-agent", flag.ContinueOnError)
	listen := fs.String("listen", "", fmt.Sprintf("where to serve: vsock://:%d, serial://%s, unix:///path, or %s (vsock if the guest has it, else serial)", agentwire.VsockPort, agentwire.SerialPort, agentwire.ListenAuto))
	defaultUser := fs.String("default-user", "", "user for execs that name none (default: the agent's own user)")
	marker := fs.String("provisioned-marker", agentwire.ProvisionedMarker, "file whose existence means provisioning is complete")
	grace := fs.Duration("kill-grace", 3*time.Second, "time between SIGHUP and SIGKILL when a client goes away")
	version := fs.Bool("version", false, "print the version and exit")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil
		}
		os.Exit(2)
	}
	if *version {
		fmt.Printf("cowork-agent %s (commit %s, %s)\n", buildinfo.Version, buildinfo.Commit, buildinfo.GoVersion())
		return nil
	}
	if *listen == "" {
		fmt.Fprintf(os.Stderr, "cowork-agent: --listen is required, e.g. --listen %s\n", agentwire.ListenAuto)
		os.Exit(2)
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, nil))

	l, err := listener.Listen(*listen, log)
	if err != nil {
		return err
	}
	guestagent.MarkListening() // Info reports when, for the host's boot phases
	opts := guestagent.Options{
		DefaultUser:       *defaultUser,
		ProvisionedMarker: *marker,
		KillGrace:         *grace,
		Logger:            log,
	}
	// Only a guest's agent (on vsock or the serial port) may change its
	// system's identity: one on a unix socket is a test's, on a host.
	if !strings.HasPrefix(*listen, "unix:") {
		opts.Personalize = guestagent.RealPersonalize()
	}
	srv := guestagent.New(opts)
	l = listener.Sniff(l, log, listener.Handlers{Exec: srv.ServeExec, Call: srv.ServeCall})

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	go func() {
		<-ctx.Done()
		log.Info("stopping")
		l.Close()  // no new channels
		srv.Stop() // ends every exec and call, which kills their process trees
	}()
	log.Info("serving", "listen", l.Addr().String(), "version", buildinfo.Version, "default_user", *defaultUser)
	err = refuseOthers(l, log)
	srv.Wait()
	if errors.Is(err, net.ErrClosed) {
		return nil
	}
	return err
}

// refuseOthers closes each channel of a kind the agent does not serve (a
// peer that speaks another protocol, e.g. an older hostd's gRPC) until l
// is closed: its peer sees the channel end unanswered. It returns why
// Accept failed.
func refuseOthers(l net.Listener, log *slog.Logger) error {
	for {
		c, err := l.Accept()
		if err != nil {
			return err
		}
		log.Warn("closing a channel of unknown kind: the host speaks another protocol than this agent", "remote", c.RemoteAddr())
		c.Close()
	}
}
