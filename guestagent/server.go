// Package guestagent is the daemon inside the guest that runs every command
// cowork sends. Execs come on connections of their own (execwire, served
// by ServeExec), and so does each of hostd's other calls (agentcall:
// Info, SetTime, Shutdown, Provisioning, ShareRelease, ShareMount; served
// by ServeCall). Both share one listener, which tells them apart by their
// first bytes.
package guestagent

import (
	"errors"
	"io/fs"
	"log/slog"
	"net"
	"os"
	"runtime"
	"sync"
	"time"

	"github.com/coworkhq/cowork/guestagent/provision"
	"github.com/coworkhq/cowork/internal/agentcall"
	"github.com/coworkhq/cowork/internal/buildinfo"
	"github.com/coworkhq/cowork/internal/procstat"
)

// Options configures the agent. The zero value runs commands as the agent's
// own user and touches the real clock and power switch.
type Options struct {
	// DefaultUser runs an Exec that names no user; empty means the agent's user.
	DefaultUser string
	// ProvisionedMarker is a file that exists once the guest is provisioned.
	ProvisionedMarker string
	// Provision reads the guest's provisioning for the Provisioning call;
	// nil reads the real files (provision.DefaultPaths, with
	// ProvisionedMarker).
	Provision *provision.Reader
	// ProvisionPoll is how often Provisioning looks; zero means 2 seconds.
	ProvisionPoll time.Duration
	// ProvisionHeartbeat is how often Provisioning repeats a status that
	// did not change; zero means agentcall.ProvisioningHeartbeat.
	ProvisionHeartbeat time.Duration
	// KillGrace is how long a process tree gets between SIGHUP and SIGKILL
	// when its client goes away. Zero means 3 seconds.
	KillGrace time.Duration
	// SetClock sets the wall clock; nil means the system clock.
	SetClock func(time.Time) error
	// PowerOff syncs and powers the machine off; nil means the real one.
	PowerOff func() error
	// Logger receives one line per exec; nil means slog's default.
	Logger *slog.Logger
	// Share stands in for the guest's /proc and its mount calls in the
	// share calls (ShareRelease, ShareMount): a fake guest's (hostd's
	// tests). nil means the guest's own.
	Share *ShareSystem
	// Personalize is what the personalize call changes (a fork's random
	// pool, machine-id, hostname); nil refuses the call. Only the
	// agent's main sets the real one, RealPersonalize.
	Personalize *PersonalizeSystem
	// SSHAgentSocket is where the ssh_agent call listens for the guest's
	// SSH clients; empty means /run/cowork/ssh-agent.sock.
	SSHAgentSocket string
	// TrustRoot is the root under which the secrets call writes the CA
	// (usr/local/share/ca-certificates, etc/ssl/certs); empty means /.
	TrustRoot string
	// Systemctl is the program the start_units call runs; empty means
	// systemctl from PATH.
	Systemctl string
}

// ShareSystem is what the share calls look at and do: a /proc tree (its
// processes, and self/mountinfo) and the unmount and mount of the share.
type ShareSystem struct {
	ProcRoot string
	Unmount  func(dir string, force bool) error
	Mount    func(tag, dir string, readOnly bool) error
	// Eject stands in for the share_eject call's slots (nil: there are
	// none to drive), Rescan for ShareMount's rescan of them (nil: none).
	Eject  func() (int, error)
	Rescan func() (bool, error)
}

// Server serves the agent's exec and call connections.
type Server struct {
	opts      Options
	log       *slog.Logger
	accounts  *accountCache // user lookups, shared by every exec
	provision *provision.Reader
	share     shareSys      // the share calls' syscalls and /proc
	owners    *socketOwners // socket_owners: who holds a guest socket

	running sync.WaitGroup // live exec sessions

	connMu  sync.Mutex
	conns   map[net.Conn]struct{} // open exec and call connections
	stopped bool                  // Stop ran: no more are served

	ssh     sshAgent  // the lent SSH agent's socket (ssh_agent call)
	secrets secretEnv // the secrets' placeholders (secrets call)
}

// New returns a Server; hand it connections with ServeExec and ServeCall
// (listener.Sniff does).
func New(opts Options) *Server {
	if opts.KillGrace <= 0 {
		opts.KillGrace = 3 * time.Second
	}
	if opts.SetClock == nil {
		opts.SetClock = setSystemClock
	}
	if opts.PowerOff == nil {
		opts.PowerOff = powerOff
	}
	if opts.ProvisionPoll <= 0 {
		opts.ProvisionPoll = provisionPoll
	}
	if opts.ProvisionHeartbeat <= 0 {
		opts.ProvisionHeartbeat = agentcall.ProvisioningHeartbeat
	}
	prov := opts.Provision
	if prov == nil {
		prov = &provision.Reader{Paths: provision.DefaultPaths(opts.ProvisionedMarker)}
	}
	log := opts.Logger
	if log == nil {
		log = slog.Default()
	}
	share := realShareSys()
	if f := opts.Share; f != nil {
		share.procRoot, share.unmount, share.mount = f.ProcRoot, f.Unmount, f.Mount
		share.sync, share.mkdir = func() {}, func(string) error { return nil }
		share.eject, share.rescan = f.Eject, f.Rescan
		if share.eject == nil {
			share.eject = func() (int, error) { return 0, nil }
		}
		if share.rescan == nil {
			share.rescan = func() (bool, error) { return false, nil }
		}
	}
	owners := &socketOwners{procRoot: share.procRoot, dump: dumpSockets}
	return &Server{opts: opts, log: log, accounts: &accountCache{}, provision: prov, share: share, owners: owners, conns: map[net.Conn]struct{}{}}
}

// Wait blocks until every exec session has finished cleaning up, so that
// the agent never exits leaving a process tree behind.
func (s *Server) Wait() { s.running.Wait() }

// Stop closes every exec and call connection and refuses new ones: each
// running process is hung up on as if its client had gone. Wait then
// returns once their trees are killed.
func (s *Server) Stop() {
	s.connMu.Lock()
	defer s.connMu.Unlock()
	s.stopped = true
	for c := range s.conns {
		c.Close()
	}
}

func (s *Server) addConn(c net.Conn) bool {
	s.connMu.Lock()
	defer s.connMu.Unlock()
	if s.stopped {
		return false
	}
	s.conns[c] = struct{}{}
	return true
}

func (s *Server) removeConn(c net.Conn) {
	s.connMu.Lock()
	defer s.connMu.Unlock()
	delete(s.conns, c)
}

func (s *Server) track() (done func()) {
	s.running.Add(1)
	return s.running.Done
}

// info reports the agent's version and the guest's state.
func (s *Server) info() *agentcall.Info {
	sys := readSystemInfo()
	resp := &agentcall.Info{
		Version:     buildinfo.Version,
		BootID:      sys.bootID,
		UptimeMs:    sys.uptime.Milliseconds(),
		Hostname:    sys.hostname,
		Kernel:      sys.kernel,
		Arch:        runtime.GOARCH,
		DefaultUser: s.opts.DefaultUser,
	}
	resp.TimeUnixNano = time.Now().UnixNano()
	bt := readBootTimes()
	resp.InitStartedMs, resp.UserspaceStartedMs = bt.initStarted, bt.userspaceStarted
	resp.AgentStartedMs, resp.AgentListeningMs = bt.agentStarted, bt.agentListening
	ps := procstat.Self()
	resp.Process = agentcall.ProcessStats{Goroutines: int32(ps.Goroutines), OpenFDs: int32(ps.OpenFDs), RSSBytes: ps.RSSBytes}
	if resp.DefaultUser == "" {
		if a, err := s.accounts.lookup(""); err == nil {
			resp.DefaultUser = a.name
		}
	}
	if s.opts.ProvisionedMarker != "" {
		_, err := os.Stat(s.opts.ProvisionedMarker)
		resp.Provisioned = err == nil
		if err != nil && !errors.Is(err, fs.ErrNotExist) {
			s.log.Warn("provisioning marker", "path", s.opts.ProvisionedMarker, "err", err)
		}
	}
	return resp
}

// setTime sets the guest's clock to the host's, given in Unix
// nanoseconds.
func (s *Server) setTime(unixNano int64) (*agentcall.SetTimeReply, error) {
	if unixNano <= 0 {
		return nil, &refusal{agentcall.KindInvalid, "set time: no time given"}
	}
	host := time.Unix(0, unixNano)
	skew := time.Since(host)
	if err := s.opts.SetClock(host); err != nil {
		return nil, &refusal{agentcall.KindFailed, "set time: " + err.Error()}
	}
	if skew > time.Second || skew < -time.Second {
		s.log.Info("clock set", "skew", skew.Round(time.Millisecond))
	}
	return &agentcall.SetTimeReply{SkewNano: int64(skew)}, nil
}

// shutdown syncs and powers the guest off, after a moment that lets the
// answer leave first.
func (s *Server) shutdown() {
	s.log.Info("shutdown requested")
	go func() {
		time.Sleep(100 * time.Millisecond) // let the answer leave first
		if err := s.opts.PowerOff(); err != nil {
			s.log.Error("power off", "err", err)
		}
	}()
}
