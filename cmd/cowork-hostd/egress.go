package main

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/coworkhq/cowork/hostd/egresslog"
	"github.com/coworkhq/cowork/hostd/egresspolicy"
	"github.com/coworkhq/cowork/hostd/egressrelay"
	"github.com/coworkhq/cowork/hostd/netstack"
	"github.com/coworkhq/cowork/hostd/netstack/audit"
	"github.com/coworkhq/cowork/hostd/netstack/policy"
	"github.com/coworkhq/cowork/image"
	"github.com/coworkhq/cowork/image/agentbin"
	"github.com/coworkhq/cowork/internal/hostdwire"
)

// minAuditSize is the least room egress's audit log may be given.
const minAuditSize = 16 << 20

// egress runs cowork's auditing HTTP(S) proxy with no VM behind it, for
// clients that reach it over a network: on a cluster, the sandboxes' VMs
// (docs/scale-out.md). The policy is an instance's network policy as
// JSON (mode, allow, deny); the audit log is an instance's, in dir. It
// serves until SIGTERM or SIGINT.
func egress(ctx context.Context, args []string, stderr io.Writer) int {
	fs := flag.NewFlagSet("egress", flag.ContinueOnError)
	listen := fs.String("listen", ":7890", "the address to serve the proxy on")
	policyFile := fs.String("policy", "", "the network policy, as JSON: {\"mode\": ..., \"allow\": [...], \"deny\": [...]} (none: the default mode)")
	dir := fs.String("audit", "", "the folder of the audit log (network.jsonl, its key and head)")
	upstream := fs.String("upstream-proxy", "", "carry all egress through this proxy: http://HOST:PORT or socks5://HOST:PORT")
	relayListen := fs.String("relay-listen", "", "serve the credential relay for the guests on this address too (e.g. :7891)")
	sessionsListen := fs.String("sessions-listen", "", "open the relay's sessions on this loopback address (e.g. 127.0.0.1:7892), reached through the API server's port-forward only")
	logListen := fs.String("log-listen", "", "serve the audit log, read-only, on this loopback address (e.g. 127.0.0.1:7893), reached through the API server's port-forward only")
	keyFile := fs.String("api-key-file", "", "the relay's API key (a Secret's, mounted into this pod alone); read at each session")
	keySecret := fs.String("api-key-secret", egressrelay.DefaultSecret, "the name of the Secret mounted at --api-key-file, for the messages that say how to make it")
	endpoint := fs.String("api-endpoint", "", "the API endpoint the relay sends the key to (none: "+netstack.DefaultAPIEndpoint+")")
	auditSize := fs.Int64("audit-size", (audit.DefaultKeep+1)*audit.DefaultMaxSize, "the most bytes the audit log and its rotated files take together")
	fail := func(err error) int {
		fmt.Fprintln(stderr, "cowork-hostd:", err)
		if _, ok := err.(usageError); ok {
			return hostdwire.ExitUsage
		}
		return 1
	}
	if err := parse(fs, args); err != nil {
		return fail(err)
	}
	if *dir == "" {
		return fail(usageError{errors.New("egress: no --audit: name the folder the audit log goes to")})
	}
	if *auditSize < minAuditSize {
		return fail(usageError{fmt.Errorf("egress: --audit-size %d: want at least %d bytes", *auditSize, minAuditSize)})
	}
	if (*relayListen == "") != (*sessionsListen == "") {
		return fail(usageError{errors.New("egress: --relay-listen and --sessions-listen go together: the relay serves the sessions opened on the other")})
	}
	if *sessionsListen != "" {
		if err := egressrelay.CheckLoopback(*sessionsListen); err != nil {
			return fail(usageError{fmt.Errorf("egress: --sessions-listen %w", err)})
		}
	}
	if *logListen != "" {
		if err := egressrelay.CheckLoopback(*logListen); err != nil {
			return fail(usageError{fmt.Errorf("egress: --log-listen %w", err)})
		}
	}
	p, err := readEgressPolicy(*policyFile)
	if err != nil {
		return fail(err)
	}
	if err := os.MkdirAll(*dir, 0o700); err != nil {
		return fail(err)
	}
	// The log and its rotated files share the volume's bytes: rotation
	// drops the oldest before the volume fills.
	al, err := audit.Open(filepath.Join(*dir, "network.jsonl"), audit.Options{
		Key: filepath.Join(*dir, "audit.key"), Head: filepath.Join(*dir, "audit.head"),
		MaxSize: *auditSize / (audit.DefaultKeep + 1), Keep: audit.DefaultKeep,
	})
	if err != nil {
		return fail(err)
	}
	defer al.Close()
	log := slog.New(slog.NewTextHandler(stderr, nil))
	n, err := netstack.New(netstack.Config{
		GuestMAC: netstack.GuestMAC("egress"), Policy: p, Upstream: *upstream, Audit: al, Log: log,
	})
	if err != nil {
		return fail(fmt.Errorf("egress: %w", err))
	}
	defer n.Close()
	l, err := net.Listen("tcp", *listen)
	if err != nil {
		return fail(fmt.Errorf("egress: %w", err))
	}
	ctx, stop := signal.NotifyContext(ctx, syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	var served sync.WaitGroup
	failed := make(chan error, 2)
	if *relayListen != "" {
		rl, err := net.Listen("tcp", *relayListen)
		if err != nil {
			l.Close()
			return fail(fmt.Errorf("egress: %w", err))
		}
		sl, err := net.Listen("tcp", *sessionsListen)
		if err != nil {
			l.Close()
			rl.Close()
			return fail(fmt.Errorf("egress: %w", err))
		}
		h := &egressrelay.Sessions{Stack: n, KeyFile: *keyFile, Secret: *keySecret, Endpoint: *endpoint, Closing: ctx.Done(), Log: log}
		log.Info("egress relay serving", "addr", rl.Addr().String(), "sessions", sl.Addr().String())
		// One that fails stops the others: a proxy without its relay
		// would leave every ask waiting in silence.
		for _, serve := range []func() error{
			func() error { return n.ServeRelayOn(ctx, rl) },
			func() error { return egressrelay.Serve(ctx, sl, h) },
		} {
			served.Add(1)
			go func() {
				defer served.Done()
				if err := serve(); err != nil {
					failed <- err
					stop()
				}
			}()
		}
	}
	if *logListen != "" {
		ll, err := net.Listen("tcp", *logListen)
		if err != nil {
			l.Close()
			stop()
			served.Wait()
			return fail(fmt.Errorf("egress: %w", err))
		}
		log.Info("egress audit log serving", "addr", ll.Addr().String())
		served.Add(1)
		// One that fails leaves the proxy serving: its clients' traffic
		// matters more than a reader of its log.
		go func() {
			defer served.Done()
			srv := &egresslog.Server{Path: filepath.Join(*dir, "network.jsonl"), Log: log}
			if err := srv.Serve(ctx, ll); err != nil {
				log.Error("egress audit log no longer served", "err", err)
			}
		}()
	}
	log.Info("egress proxy serving", "addr", l.Addr().String(), "audit", *dir)
	// On a signal it closes every client's connection and returns once
	// their records are written; the log closes after.
	err = n.ServeProxyOn(ctx, l, agentFiles())
	stop()
	served.Wait()
	close(failed)
	for e := range failed {
		err = errors.Join(err, e)
	}
	if err != nil {
		return fail(fmt.Errorf("egress: %w", err))
	}
	return 0
}

// readEgressPolicy reads the policy file (egresspolicy.Read); a file
// that is no egress policy is a usage error.
func readEgressPolicy(path string) (policy.Policy, error) {
	p, err := egresspolicy.Read(path)
	if errors.As(err, new(egresspolicy.InvalidError)) {
		err = usageError{fmt.Errorf("egress: %w", err)}
	}
	return p, err
}

// agentFiles serves the agents this binary carries (agentbin) at
// image.AgentDownload(ARCH), and nothing else: a cluster's guest,
// whose seed holds no agent, fetches this build's there and checks it
// against the sha256 in its user-data (image.Guest.AgentURL).
func agentFiles() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		arch, ok := strings.CutPrefix(r.URL.Path, image.AgentDownload(""))
		if !ok || (arch != "amd64" && arch != "arm64") {
			http.Error(w, "cowork egress: no such file; the agents are at "+image.AgentDownload("amd64")+" and "+image.AgentDownload("arm64"), http.StatusNotFound)
			return
		}
		b, err := agentbin.Agent(arch)
		if err != nil {
			http.Error(w, "cowork egress: "+err.Error(), http.StatusNotFound)
			return
		}
		w.Header().Set("Content-Type", "application/octet-stream")
		http.ServeContent(w, r, "", time.Time{}, bytes.NewReader(b))
	})
}
