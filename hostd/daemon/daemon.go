// Package daemon is hostd: the long-lived process that owns one instance's
// VM, its network, the agent relay and the control socket. `cowork start`
// launches it detached; it lives until the VM stops.
package daemon

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"sync"
	"syscall"
	"time"

	"google.golang.org/grpc"

	"github.com/coworkhq/cowork/hostd/agentclient"
	"github.com/coworkhq/cowork/hostd/console"
	"github.com/coworkhq/cowork/hostd/controlpb"
	"github.com/coworkhq/cowork/hostd/instance"
	"github.com/coworkhq/cowork/hostd/machine"
	"github.com/coworkhq/cowork/hostd/netstack"
	"github.com/coworkhq/cowork/hostd/netstack/audit"
	"github.com/coworkhq/cowork/image"
	"github.com/coworkhq/cowork/image/cidata"
	"github.com/coworkhq/cowork/internal/unixsock"
)

// DefaultStopTimeout is how long a guest may take to shut down.
const DefaultStopTimeout = 30 * time.Second

// Daemon is one instance's hostd.
type Daemon struct {
	name   string
	paths  instance.Paths
	cfg    *instance.Config
	log    *slog.Logger
	events *events

	vm      machine.Machine
	net     *netstack.Stack
	audit   *audit.Log
	console *console.Console
	started time.Time

	mu    sync.Mutex
	agent *agentclient.Client
	info  agentInfo
	ready bool

	stopOnce   sync.Once
	stopReq    chan stopRequest
	cancelBoot context.CancelFunc
	// newVM makes the VM; nil means this host's backend (tests give a
	// fake).
	newVM func(machine.Config, *slog.Logger) (machine.Machine, error)
	// closing is closed when hostd is about to exit: the calls that
	// would last as long as their client (sessions) end then.
	closing chan struct{}
}

type agentInfo struct{ version, bootID string }

type stopRequest struct {
	force   bool
	timeout time.Duration
}

// Run is `cowork hostd`: it serves the instance until its VM stops.
func Run(name string, log *slog.Logger) error {
	// Signals are caught before anything else, so that one arriving at any
	// point (an interrupted `cowork start` sends SIGTERM, maybe before the
	// lock is even taken) becomes a stop rather than the default death,
	// which would leave the pid file and sockets behind.
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT, syscall.SIGHUP)
	defer signal.Stop(sigs)

	paths, err := instance.PathsFor(name)
	if err != nil {
		return err
	}
	lock, err := instance.TryLock(paths)
	if errors.Is(err, instance.ErrRunning) {
		return err
	}
	if err != nil {
		return err
	}
	defer lock.Release()
	if stale, err := lock.CleanStale(paths); err != nil {
		return fmt.Errorf("clean up after the last hostd: %w", err)
	} else if stale != nil {
		log.Warn("cleaned up after a hostd that died", "pid", stale.Pid, "files", stale.Files)
	}
	cfg, err := instance.Load(name)
	if err != nil {
		return err
	}
	if err := instance.WritePid(paths); err != nil {
		return err
	}
	d := &Daemon{name: name, paths: paths, cfg: cfg, log: log, events: newEvents(), stopReq: make(chan stopRequest, 1), closing: make(chan struct{})}
	defer d.cleanup()
	return d.serve(sigs)
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

// serve boots the VM and serves it until it stops; a signal on sigs stops
// it like `cowork stop` does.
func (d *Daemon) serve(sigs <-chan os.Signal) error {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	// The boot can be interrupted from the first moment a stop may be
	// asked for, so that no stop lets a boot it came too early for go on.
	bootCtx, cancelBoot := context.WithCancel(ctx)
	d.mu.Lock()
	d.cancelBoot = cancelBoot
	d.mu.Unlock()

	control, err := unixsock.Listen(d.paths.HostdSock())
	if err != nil {
		return err
	}
	g := grpc.NewServer()
	controlpb.RegisterControlServer(g, &controlServer{d: d})
	go func() {
		// nil once stopServing stops it; anything else leaves hostd deaf
		// to the CLI, and status can only point at this log.
		if err := g.Serve(control); err != nil {
			d.log.Error("hostd.sock stopped serving; the CLI cannot reach this hostd: stop its process, then `cowork start`", "err", err)
		}
	}()
	defer d.stopServing(g)

	go func() {
		if _, ok := <-sigs; ok {
			d.requestStop(stopRequest{timeout: DefaultStopTimeout})
		}
	}()

	err = d.boot(ctx, bootCtx)
	cancelBoot()
	if err != nil {
		select {
		case req := <-d.stopReq: // asked to stop while booting
			if d.vm == nil {
				d.events.emit(controlpb.Phase_STOPPED, "stopped before the VM started", nil)
				return nil
			}
			d.shutdown(req)
		default:
			d.log.Error("boot failed", "err", err)
			// Kept for `cowork status`, and for a start whose event
			// stream broke before the failure reached it.
			_ = instance.WriteFileAtomic(d.paths.LastStop(), []byte(err.Error()+"\n"), 0o600)
			d.events.emit(controlpb.Phase_FAILED, "boot failed", err)
			if d.vm != nil {
				_ = d.vm.Stop(context.Background(), 0)
			}
			return err
		}
	} else {
		select {
		case req := <-d.stopReq:
			d.shutdown(req)
		case <-d.vm.Done():
		}
	}
	<-d.vm.Done()
	// The VM is gone, so is its end of the console: what it printed last
	// is in serial.log and in the console's tail once the drain ends.
	d.console.Close(consoleWait)
	if err := d.vm.Err(); err != nil {
		err = explainStop(err, d.console.Tail(), d.paths.SerialLog())
		_ = instance.WriteFileAtomic(d.paths.LastStop(), []byte(err.Error()+"\n"), 0o600)
		d.log.Error("vm stopped", "err", err)
		d.events.emit(controlpb.Phase_STOPPED, "the VM stopped unexpectedly", err)
		return err
	}
	d.events.emit(controlpb.Phase_STOPPED, "stopped", nil)
	d.log.Info("stopped")
	return nil
}

// boot starts the network and the VM, then waits for the agent; the
// relay and the clock watch start once it answers. What lives as long as
// hostd runs on life; the waiting is cut short by ctx.
func (d *Daemon) boot(life, ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return err // stopped before it began
	}
	_ = os.Remove(d.paths.LastStop())
	if err := os.MkdirAll(d.paths.Run(), 0o700); err != nil {
		return err
	}
	con, err := console.Open(d.paths.SerialLog())
	if err != nil {
		return err
	}
	d.mu.Lock()
	d.console = con
	d.mu.Unlock()
	mac := netstack.GuestMAC(d.name)
	var forwards []netstack.Forward
	for _, p := range d.cfg.Publish {
		forwards = append(forwards, netstack.Forward{HostAddr: p.HostAddr(), GuestPort: p.GuestPort})
	}
	auditLog, err := audit.Open(d.paths.NetworkLog(), audit.DefaultMaxSize, audit.DefaultKeep)
	if err != nil {
		return err
	}
	upstream := d.cfg.Network.Upstream
	if upstream == "" {
		upstream = netstack.UpstreamFromEnv()
	}
	stack, err := netstack.New(netstack.Config{
		GuestMAC: mac,
		Policy:   d.cfg.Network.Policy,
		Forwards: forwards,
		Upstream: upstream,
		Audit:    auditLog,
		Log:      d.log,
		NameFlag: instance.NameFlag(d.name),
		Limits: netstack.Limits{
			MaxFlows:    d.cfg.Network.MaxFlows,
			MaxPending:  d.cfg.Network.MaxPending,
			IdleTimeout: time.Duration(d.cfg.Network.TCPIdleSeconds) * time.Second,
		},
	})
	if err != nil {
		auditLog.Close()
		return err
	}
	d.mu.Lock()
	d.net, d.audit = stack, auditLog
	d.mu.Unlock()
	nic, err := stack.Attach(life)
	if err != nil {
		return err
	}
	defer nic.Close() // each backend holds its own copy (machine.Config.Network)

	mc := machine.Config{
		Arch:      d.cfg.Arch,
		CPUs:      d.cfg.CPUs,
		Memory:    int64(d.cfg.Memory),
		Disk:      d.paths.Disk(),
		ShareDir:  d.cfg.Workspace,
		ShareTag:  instance.ShareTag,
		ShareUID:  d.guestUID(),
		ShareGID:  d.guestUID(), // the user's own group, made with it
		Network:   nic,
		MAC:       mac,
		MTU:       netstack.MTU,
		MachineID: d.paths.MachineID(),
		Console:   con.W,
		RunDir:    d.paths.Run(),
		PowerOff:  d.agentPowerOff,
	}
	// The seed disk is made anew at every start, so the guest gets this
	// build's agent (its boot script reinstalls it when it differs).
	if err := d.writeCIData(); err != nil {
		return err
	}
	mc.CIData = d.paths.CIData()
	if d.cfg.Boot == instance.BootKernel {
		mc.Kernel, mc.Initrd, mc.Cmdline = d.paths.Kernel(), d.paths.Initrd(), d.cfg.Cmdline
		if _, err := os.Stat(mc.Initrd); err != nil {
			mc.Initrd = ""
		}
	} else {
		mc.EFIVars = d.paths.EFIVars()
	}
	if _, err := os.Stat(d.cfg.Workspace); err != nil {
		return fmt.Errorf("workspace %s: %w; create it, or recreate the instance with another --workspace", d.cfg.Workspace, err)
	}
	if home, err := instance.Home(); err == nil {
		mc.CacheDir = filepath.Join(home, instance.CacheDir)
	}
	if err := ctx.Err(); err != nil {
		return err // stopped while it was getting ready: start no VM
	}
	newVM := newMachine
	if d.newVM != nil {
		newVM = d.newVM
	}
	vm, err := newVM(mc, d.log)
	if err != nil {
		return err
	}
	err = vm.Start(ctx)
	con.CloseWriter() // the VM holds its own copy
	if err != nil {
		return err
	}
	d.mu.Lock()
	d.vm, d.started = vm, time.Now()
	d.mu.Unlock()
	backend, accel := describe(vm)
	msg := fmt.Sprintf("VM started (%s, %s)", backend, accel)
	if accel == "tcg" {
		msg += "; no usable KVM, so the guest is emulated and slow"
	}
	d.events.emit(controlpb.Phase_VM_STARTED, msg, nil)

	go d.watchKernel(ctx)
	var provErr *provisionError
	provisioned := true
	if err := d.waitForAgent(ctx); errors.As(err, &provErr) {
		// The guest runs and its agent answers: keep it up for a look inside.
		provisioned = false
		d.events.emit(controlpb.Phase_FAILED, "provisioning failed; the guest is up: look with `cowork exec sudo journalctl -u cowork-provision -n 50`; after `cowork stop`, `cowork init` retries it", err)
	} else if err != nil {
		return err
	}
	relay, err := unixsock.Listen(d.paths.AgentSock())
	if err != nil {
		return err
	}
	go d.relay(life, relay)
	go d.watchClock(life)
	if provisioned {
		// Ready only now that agent.sock serves: a client told "ready"
		// connects at once, and must find it.
		d.mu.Lock()
		d.ready = true
		d.mu.Unlock()
		d.events.emit(controlpb.Phase_READY, "ready", nil)
	}
	return nil
}

// guestUID is the guest user's uid: the host user's, so that the
// workspace has one owner on both sides, or 1000 when cowork runs as root.
func (d *Daemon) guestUID() int {
	if d.cfg.GuestUID <= 0 {
		return 1000
	}
	return d.cfg.GuestUID
}

func (d *Daemon) writeCIData() error {
	uid := d.guestUID()
	id := d.cfg.InstanceID
	if id == "" {
		id = "cowork-" + d.name
	}
	proxy := fmt.Sprintf("http://%s:%d", netstack.GatewayIP, netstack.ProxyPort)
	packages, commands := image.DefaultPackages, image.DefaultProvision
	if p := d.cfg.Provision; p != nil {
		packages, commands = p.Packages, p.Commands
	}
	return cidata.Write(d.paths.CIData(), cidata.CIData{
		InstanceID: id,
		Arch:       d.cfg.Arch,
		Guest: image.Guest{
			Hostname:  "cowork",
			User:      "cowork",
			UID:       uid,
			ShareTag:  instance.ShareTag,
			ProxyURL:  proxy,
			NoProxy:   "localhost,127.0.0.1,::1,.cowork.internal," + netstack.Subnet,
			Packages:  packages,
			Provision: commands,
			MAC:       netstack.GuestMAC(d.name).String(),
		},
	})
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
