// Package hostd is the daemon of one instance, the cowork-hostd process:
// it owns the instance's VM (through an injected machine.Machine), its
// network stack, the credential relay, the audit log, the agent relay,
// the control socket and the instance's lock. The Go API (the module's
// root package) launches it detached and asks it over the control socket;
// it lives until the VM stops.
package hostd

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/coworkhq/cowork/hostd/agentrpc"
	"github.com/coworkhq/cowork/hostd/console"
	"github.com/coworkhq/cowork/hostd/controlwire"
	"github.com/coworkhq/cowork/hostd/instance"
	"github.com/coworkhq/cowork/hostd/machine"
	"github.com/coworkhq/cowork/hostd/netstack"
	"github.com/coworkhq/cowork/hostd/netstack/audit"
	"github.com/coworkhq/cowork/internal/unixsock"
)

// DefaultStopTimeout is how long a guest may take to shut down.
const DefaultStopTimeout = 30 * time.Second

// DefaultAgentTimeout is how long the guest's agent may take to answer
// once the VM runs. Guests answer in seconds, and in a few minutes when
// emulated; past this one is not coming (a kernel that did not boot, an
// agent that does not start). hostd gives up on its own rather than keep
// the VM running for nobody: the start that launched it may be gone
// without a word (killed), and it cannot stop hostd then.
const DefaultAgentTimeout = 15 * time.Minute

// Options is what one hostd needs from whoever runs it.
type Options struct {
	Name string       // the instance
	Log  *slog.Logger // nil means slog's default
	// NewMachine makes the VM from its Config: cowork-hostd passes this
	// host's hypervisor (QEMU, or vz on macOS), tests a fake
	// (hostd/machine/machinetest). The daemon links neither backend.
	NewMachine func(machine.Config, *slog.Logger) (machine.Machine, error)
	// AgentTimeout bounds the wait for the guest agent's first answer
	// (not the provisioning that follows); zero means DefaultAgentTimeout.
	AgentTimeout time.Duration
	// Standby loads the instance's saved guest and holds it paused until
	// CallWake (standby.go); with no saved guest it can resume, hostd
	// exits, and boots nothing.
	Standby bool
}

// Daemon is one instance's hostd.
type Daemon struct {
	name   string
	paths  instance.Paths
	cfg    *instance.Config
	log    *slog.Logger
	events *events
	// newMachine and agentTimeout are Options'.
	newMachine   func(machine.Config, *slog.Logger) (machine.Machine, error)
	agentTimeout time.Duration
	// settleFor is how long a guest not provisioned when its agent first
	// answers gets to become so before hostd follows its provisioning
	// (bootSettle; 0: not at all).
	settleFor time.Duration

	vm      machine.Machine
	net     *netstack.Stack
	audit   *audit.Log
	console *console.Console
	started time.Time
	// clockSet closes once the booted guest's clock is set (boot's
	// goroutine alone reads and writes it).
	clockSet <-chan struct{}

	mu    sync.Mutex
	agent *agentrpc.Client
	info  agentInfo
	ready bool
	// secrets are those the network holds (hostd/secrets.go), and
	// secretsCAPEM the CA the guest trusts for their hosts;
	// secretsLent: the guest's agent has placeholders to take back.
	secrets      []instance.Secret
	secretsCAPEM []byte
	secretsLent  bool
	// secretsMu orders reloads and lending: the guest gets the last list.
	secretsMu sync.Mutex
	// resumed: this run's guest was resumed from a saved state, not
	// booted; inSuspend: a suspend is saving it (its status says so).
	resumed, inSuspend bool

	// forkOf is the instance whose saved guest this run resumes, when
	// that is another's (a clone of a snapshot with memory); set by
	// savedState on the boot's goroutine, before the guest runs.
	forkOf string

	// suspending is set from a suspend's asking to its end, so that one
	// runs at a time; suspendReq carries it to the main loop.
	suspending atomic.Bool
	suspendReq chan suspendRequest
	// cancelSuspend, while a suspend runs, cuts it short (a stop asked).
	cancelSuspend context.CancelFunc

	stopOnce   sync.Once
	stopReq    chan stopRequest
	cancelBoot context.CancelFunc
	// closing is closed when hostd is about to exit: the calls that
	// would last as long as their client (sessions) end then.
	closing chan struct{}

	// auto follows the guest's listening sockets (autopublish.go).
	auto autoPublish

	// standby is Options.Standby; wake closes at CallWake (standby.go),
	// and standingBy says, under mu, that the loaded guest waits for it.
	standby    bool
	wake       chan struct{}
	wakeOnce   sync.Once
	standingBy bool
}

type agentInfo struct {
	version, bootID string
	boot            GuestBoot // the phases of this boot, for the status
}

type stopRequest struct {
	force   bool
	timeout time.Duration
}

// Run is `cowork-hostd run`: it serves the instance until its VM stops. ctx
// ending stops the VM as `cowork stop` does (the guest gets
// DefaultStopTimeout to power off), and Run returns once hostd has cleaned
// up: the command turns its signals into ctx.
func Run(ctx context.Context, o Options) error {
	if o.NewMachine == nil {
		return errors.New("hostd: no way to make a VM (Options.NewMachine is nil); pass the host's backend (cowork-hostd passes QEMU or vz)")
	}
	if o.Log == nil {
		o.Log = slog.Default()
	}
	paths, err := instance.PathsFor(o.Name)
	if err != nil {
		return err
	}
	lock, err := instance.TryLock(paths)
	if err != nil {
		return err // instance.ErrRunning when another hostd has it
	}
	defer lock.Release()
	if stale, err := lock.CleanStale(paths); err != nil {
		return fmt.Errorf("clean up after the last hostd: %w", err)
	} else if stale != nil {
		o.Log.Warn("cleaned up after a hostd that died", "pid", stale.Pid, "files", stale.Files)
	}
	cfg, err := instance.Load(o.Name)
	if err != nil {
		return err
	}
	if err := instance.WritePid(paths); err != nil {
		return err
	}
	d := newDaemon(paths, cfg, o)
	defer d.cleanup()
	return d.serve(ctx)
}

// newDaemon is the hostd of the instance at paths, not yet serving.
func newDaemon(paths instance.Paths, cfg *instance.Config, o Options) *Daemon {
	d := &Daemon{
		name: o.Name, paths: paths, cfg: cfg, log: o.Log, events: newEvents(),
		newMachine: o.NewMachine, agentTimeout: o.AgentTimeout, settleFor: bootSettle,
		stopReq: make(chan stopRequest, 1), suspendReq: make(chan suspendRequest), closing: make(chan struct{}),
		standby: o.Standby, wake: make(chan struct{}),
	}
	if d.agentTimeout <= 0 {
		d.agentTimeout = DefaultAgentTimeout
	}
	return d
}

func (d *Daemon) cleanup() {
	d.events.close()
	d.mu.Lock()
	if d.net != nil {
		d.net.Close()
	}
	if d.audit != nil {
		d.audit.Close()
	}
	con := d.console
	d.mu.Unlock()
	if con != nil {
		con.Close(consoleWait)
	}
	for _, f := range []string{d.paths.HostdSock(), d.paths.AgentSock(), d.paths.PidFile()} {
		_ = os.Remove(f)
	}
	_ = os.RemoveAll(d.paths.Run())
}

// serve boots the VM and serves it until it stops; ctx ending stops it
// like `cowork stop` does.
func (d *Daemon) serve(ctx context.Context) error {
	// hostd's own life goes on after ctx ends, for as long as the stop
	// takes; it ends when serve returns.
	life, cancel := context.WithCancel(context.WithoutCancel(ctx))
	defer cancel()
	// The boot can be interrupted from the first moment a stop may be
	// asked for, so that no stop lets a boot it came too early for go on.
	bootCtx, cancelBoot := context.WithCancel(life)
	d.mu.Lock()
	d.cancelBoot = cancelBoot
	d.mu.Unlock()

	g, err := d.serveControl()
	if err != nil {
		return err
	}
	defer d.stopServing(g)
	// ctx ending (the command's signals) is a stop as `cowork stop` asks.
	defer context.AfterFunc(ctx, func() { d.requestStop(stopRequest{timeout: DefaultStopTimeout}) })()

	err = d.boot(life, bootCtx)
	cancelBoot()
	if err != nil {
		req, asked := d.stopAsked()
		switch {
		case !asked:
			return d.bootFailed(err)
		case d.vm == nil:
			d.events.emit(controlwire.PhaseStopped, "stopped before the VM started", nil)
			return nil
		}
		d.shutdown(req)
		return d.stopped()
	}
	for {
		select {
		case req := <-d.stopReq:
			d.shutdown(req)
			return d.stopped()
		case req := <-d.suspendReq:
			sus, err := d.suspend(req)
			if err != nil {
				// Another may be asked, as soon as this one's answer is
				// out: the client's next try must not find it under way.
				d.setSuspending(false)
			}
			req.done <- suspendResult{sus, err}
			suspendAnswered()
			if err == nil {
				return d.suspended(sus)
			}
			if s := d.vm.State(); s == machine.Stopped {
				return d.stopped() // it failed past the save: the VM is gone
			}
		case <-d.vm.Done():
			return d.stopped()
		}
	}
}

// serveControl serves the control API on hostd.sock.
func (d *Daemon) serveControl() (*controlwire.Server, error) {
	control, err := unixsock.Listen(d.paths.HostdSock())
	if err != nil {
		return nil, err
	}
	g := controlwire.NewServer(&controlServer{d: d})
	g.OnAcceptError = func(err error, failures int) {
		if err != nil {
			d.log.Warn("hostd.sock cannot accept connections; retrying", "err", err)
		} else {
			d.log.Info("hostd.sock accepts connections again", "failures", failures)
		}
	}
	go func() {
		// nil once stopServing stops it; anything else leaves hostd deaf
		// to the CLI, and status can only point at this log.
		if err := g.Serve(control); err != nil {
			d.log.Error("hostd.sock stopped serving; the CLI cannot reach this hostd: stop its process, then `cowork start`", "err", err)
		}
	}()
	return g, nil
}

// stopAsked is the stop asked for while the boot ran, if one was.
func (d *Daemon) stopAsked() (stopRequest, bool) {
	select {
	case req := <-d.stopReq:
		return req, true
	default:
		return stopRequest{}, false
	}
}

// bootFailed reports a boot that failed for a reason of its own, and
// cuts the VM's power if it got as far as running one.
func (d *Daemon) bootFailed(err error) error {
	d.log.Error("boot failed", "err", err)
	// Kept for `cowork status`, and for a start whose event stream broke
	// before the failure reached it.
	_ = instance.WriteFileAtomic(d.paths.LastStop(), []byte(err.Error()+"\n"), 0o600)
	d.events.emit(controlwire.PhaseFailed, "boot failed", err)
	if d.vm != nil {
		_ = d.vm.Stop(context.Background(), 0)
	}
	return err
}

// stopped waits for the VM to be gone, then says how it went: a stop as
// asked, or an end of its own (why is kept in last-stop, for status).
func (d *Daemon) stopped() error {
	<-d.vm.Done()
	// The VM is gone, so is its end of the console: what it printed last
	// is in serial.log and in the console's tail once the drain ends.
	d.console.Close(consoleWait)
	if err := d.vm.Err(); err != nil {
		err = explainStop(err, d.console.Tail(), d.paths.SerialLog())
		_ = instance.WriteFileAtomic(d.paths.LastStop(), []byte(err.Error()+"\n"), 0o600)
		d.log.Error("vm stopped", "err", err)
		d.events.emit(controlwire.PhaseStopped, "the VM stopped unexpectedly", err)
		return err
	}
	d.events.emit(controlwire.PhaseStopped, "stopped", nil)
	d.log.Info("stopped")
	return nil
}

// shutdown stops the VM as asked, through the Machine's own Stop, so that
// the VM knows from the start that its end was asked for: the guest powers
// off cleanly (agentPowerOff, the power button as the fallback), and its
// power is cut after the timeout, or at once with force.
func (d *Daemon) shutdown(req stopRequest) {
	d.log.Info("stopping", "force", req.force, "timeout", req.timeout)
	timeout := req.timeout
	if req.force {
		timeout = 0
	}
	_ = d.vm.Stop(context.Background(), timeout)
}

// agentPowerOff asks the guest's agent to power the guest off: it syncs
// the disks first. The VM's Stop calls it (machine.Config.PowerOff).
func (d *Daemon) agentPowerOff(ctx context.Context) error {
	d.mu.Lock()
	agent := d.agent
	d.mu.Unlock()
	if agent == nil {
		return errors.New("the guest agent has not connected")
	}
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if err := agent.Shutdown(ctx); err != nil {
		return err
	}
	d.log.Info("the guest agent is powering the guest off")
	return nil
}

// network is the guest's network stack, once started.
func (d *Daemon) network() *netstack.Stack {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.net
}

// machine is the VM, once started.
func (d *Daemon) machine() machine.Machine {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.vm
}

// requestStop asks the main loop to stop the VM, interrupting the boot if
// it is still under way; only the first asking counts.
func (d *Daemon) requestStop(req stopRequest) {
	d.stopOnce.Do(func() {
		d.stopReq <- req
		d.mu.Lock()
		if d.cancelBoot != nil {
			d.cancelBoot()
		}
		if d.cancelSuspend != nil {
			d.cancelSuspend()
		}
		d.mu.Unlock()
	})
}

// consoleWait is how long a stopped VM's console may take to reach
// serial.log.
const consoleWait = 5 * time.Second

func describe(m machine.Machine) (string, string) {
	if d, ok := m.(machine.Describer); ok {
		return d.Backend()
	}
	return "unknown", "unknown"
}
