package hostd

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"time"

	"github.com/coworkhq/cowork/hostd/console"
	"github.com/coworkhq/cowork/hostd/controlwire"
	"github.com/coworkhq/cowork/hostd/instance"
	"github.com/coworkhq/cowork/hostd/machine"
	"github.com/coworkhq/cowork/hostd/netstack"
	"github.com/coworkhq/cowork/hostd/netstack/audit"
	"github.com/coworkhq/cowork/hostd/netstack/budget"
	"github.com/coworkhq/cowork/hostd/savestate"
	"github.com/coworkhq/cowork/hostd/sshagent"
	"github.com/coworkhq/cowork/image"
	"github.com/coworkhq/cowork/image/cidata"
	"github.com/coworkhq/cowork/internal/shquote"
	"github.com/coworkhq/cowork/internal/unixsock"
)

// boot starts the network and the VM, then waits for the agent; the
// relay and the clock watch start once it answers. What lives as long as
// hostd runs on life; the waiting is cut short by ctx.
func (d *Daemon) boot(life, ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return err // stopped before it began
	}
	con, err := d.openRun()
	if err != nil {
		return err
	}
	if err := d.prepareDisk(); err != nil {
		return err
	}
	nic, err := d.startNetwork(life)
	if err != nil {
		return err
	}
	defer nic.Close() // each backend holds its own copy (machine.Config.Network)
	mc, err := d.machineConfig(nic, con.W)
	if err != nil {
		return err
	}
	if err := ctx.Err(); err != nil {
		return err // stopped while it was getting ready: start no VM
	}
	resumed, err := d.startOrResume(ctx, mc, con)
	if err != nil {
		return err
	}
	var plugged <-chan error
	if resumed { // the share goes back in while the agent reconnects
		plugged = d.plugShare(ctx)
	}
	provisioned, err := d.awaitGuest(ctx)
	if err != nil {
		return err
	}
	personalized := d.personalizeBeside(ctx, resumed)
	if resumed { // its first exec comes next, and the share's mount takes a while
		go d.warmExec(life, d.vm) // not the boot's ctx, which ends at ready
	}
	if resumed {
		d.remountAfterResume(ctx, plugged)
	} else {
		d.mountExtras(ctx)
	}
	<-personalized
	if !d.cfg.Remote() { // both go through this machine's network stack
		d.lendSSHAgent(ctx)
		d.lendSecrets(ctx)
	}
	d.awaitWiths(ctx, provisioned)
	d.awaitClock(ctx)
	if err := ctx.Err(); err != nil {
		return err // stopped while it waited: not ready
	}
	return d.serveGuest(life, provisioned)
}

// openRun begins this run in the instance's folder: the last run's stop
// reason goes, the run directory is made, and the console opens on a
// fresh serial.log.
func (d *Daemon) openRun() (*console.Console, error) {
	_ = os.Remove(d.paths.LastStop())
	if err := os.MkdirAll(d.paths.Run(), 0o700); err != nil {
		return nil, err
	}
	con, err := console.Open(d.paths.SerialLog())
	if err != nil {
		return nil, err
	}
	d.mu.Lock()
	d.console = con
	d.mu.Unlock()
	return con, nil
}

// startNetwork starts the guest's network and its audit log, and returns
// the VM's end of the link.
func (d *Daemon) startNetwork(life context.Context) (*os.File, error) {
	auditLog, err := audit.Open(d.paths.NetworkLog(), d.paths.Audit())
	if err != nil {
		return nil, err
	}
	for _, w := range auditLog.Warnings() {
		d.log.Warn("audit log: " + w)
	}
	ca, caPEM, err := d.secretsCA()
	if err != nil {
		auditLog.Close()
		return nil, err
	}
	nc := d.netConfig(auditLog)
	nc.SecretCA = ca
	nc.Ledger = d.ledger()
	stack, err := netstack.New(nc)
	if err != nil {
		auditLog.Close()
		return nil, err
	}
	// Under secretsMu, so that a reload does not slip between the list
	// read here and the network being set.
	d.secretsMu.Lock()
	d.mu.Lock()
	refs := d.cfg.Secrets
	d.mu.Unlock()
	kept, _ := d.loadSecrets(stack, refs)
	d.mu.Lock()
	d.net, d.audit = stack, auditLog
	d.secrets, d.secretsCAPEM = kept, caPEM
	d.mu.Unlock()
	d.secretsMu.Unlock()
	return stack.Attach(life)
}

// ledger is the instance's accounts of API spend: its usage.json, or for
// a throwaway clone its parent's, so that a run's spend is its parent's
// and counts toward the parent's daily budget.
func (d *Daemon) ledger() *budget.Ledger {
	owner, paths, clone := d.name, d.paths, ""
	if t := d.cfg.Throwaway; t != nil {
		if p, err := instance.PathsFor(t.Parent); err == nil {
			owner, paths, clone = t.Parent, p, d.name
		}
	}
	l, warn := budget.New(budget.Config{
		Store:         &budget.Store{Path: paths.Usage(), Lock: paths.UsageLock()},
		Instance:      owner,
		PolicyCommand: "cowork" + instance.NameFlag(owner) + " policy",
		Clone:         clone,
	})
	if warn != nil {
		d.log.Warn("API usage", "err", warn)
	}
	return l
}

// netConfig is the guest's network as the instance's config sets it.
func (d *Daemon) netConfig(auditLog *audit.Log) netstack.Config {
	var forwards []netstack.Forward
	for _, p := range d.cfg.Publish {
		forwards = append(forwards, netstack.Forward{HostAddr: p.HostAddr(), GuestPort: p.GuestPort, Proto: p.Proto})
	}
	upstream := d.cfg.Network.Upstream
	if upstream == "" {
		upstream = netstack.UpstreamFromEnv()
	}
	var lend func(net.Conn) error
	if d.cfg.SSHAgent {
		// Through the network's audit (set before the guest runs): a
		// failed line takes it for down, and no signature is made while
		// it is.
		l := &sshagent.Lender{Socket: os.Getenv("SSH_AUTH_SOCK"), Record: func(r *audit.Record) {
			if n := d.network(); n != nil {
				n.WriteAudit(r)
			}
		}, Down: func() string {
			if n := d.network(); n != nil {
				return n.AuditDown()
			}
			return ""
		}}
		lend = l.Serve
	}
	return netstack.Config{
		SSHAgent: lend,
		GuestMAC: d.guestMAC(),
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
	}
}

// machineConfig is the VM to run, on the network link nic and the
// console's write end; it writes the VM's seed disk.
func (d *Daemon) machineConfig(nic, consoleW *os.File) (machine.Config, error) {
	mc := machine.Config{
		Arch:       d.cfg.Arch,
		CPUs:       d.cfg.CPUs,
		Memory:     int64(d.cfg.Memory),
		Disk:       d.cfg.DiskPath(d.paths),
		DiskFormat: d.cfg.Format(),
		Shares:     machineShares(d.cfg),
		ShareUID:   d.guestUID(),
		ShareGID:   d.guestUID(), // the user's own group, made with it
		Network:    nic,
		MAC:        d.guestMAC(),
		MTU:        netstack.MTU,
		MachineID:  d.paths.MachineID(),
		Console:    consoleW,
		RunDir:     d.paths.Run(),
		PowerOff:   d.agentPowerOff,
	}
	if d.cfg.Remote() {
		// The guest is elsewhere (a cluster): its backend seeds it, and
		// nothing of this machine but the workspace's record goes to it.
		return mc, nil
	}
	// The seed disk is made anew at every start, so the guest gets this
	// build's agent (its boot script reinstalls it when it differs).
	if err := d.writeCIData(); err != nil {
		return mc, err
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
		return mc, fmt.Errorf("workspace %s: %w; create it, or recreate the instance with another --workspace", d.cfg.Workspace, err)
	}
	home, err := instance.Home()
	if err == nil {
		mc.CacheDir = filepath.Join(home, instance.CacheDir)
	}
	if err := d.cfg.CheckWorkspace(home); err != nil {
		flag := instance.NameFlag(d.name)
		return mc, fmt.Errorf("%w; give its guest another one with `cowork clone %s NEW --workspace ~/cowork-workspace`, then `cowork delete%s`", err, d.name, flag)
	}
	if err := errors.Join(d.cfg.ValidateMounts(), d.cfg.CheckMountHosts(home)); err != nil {
		how := "`cowork start --mount …` (or --no-mounts)"
		if _, serr := savestate.Load(d.paths.Suspend()); serr == nil {
			how = "`cowork start --cold --mount …` (or --no-mounts; --cold discards the saved guest), or make the folder again to resume it"
		}
		return mc, fmt.Errorf("%w; change the mounts with %s", err, how)
	}
	return mc, nil
}

// startVM boots vm.
func (d *Daemon) startVM(ctx context.Context, vm machine.Machine, con *console.Console) error {
	err := vm.Start(ctx)
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
	d.events.emit(controlwire.PhaseVMStarted, msg, nil)
	return nil
}

// errAgentLate cuts the wait for an agent that did not answer in time.
var errAgentLate = errors.New("the guest agent did not answer in time")

// awaitGuest follows the guest until its agent answers, then until it is
// provisioned, reporting the kernel's first words meanwhile. It says
// whether the guest is provisioned: one whose provisioning failed is kept
// up, for a look inside. The agent has agentTimeout to answer; the
// provisioning that follows takes as long as it takes.
func (d *Daemon) awaitGuest(ctx context.Context) (provisioned bool, err error) {
	go d.watchKernel(ctx)
	wctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	late := time.AfterFunc(d.agentTimeout, func() {
		d.mu.Lock()
		defer d.mu.Unlock()
		if d.agent == nil { // set, under mu, once the agent answered
			cancel(errAgentLate)
		}
	})
	defer late.Stop()
	err = d.waitForAgent(wctx)
	var provErr *provisionError
	switch {
	case err != nil && errors.Is(context.Cause(wctx), errAgentLate) && d.cfg.Remote():
		k, ctxFlag := d.cfg.Cluster, ""
		if k.Context != "" {
			ctxFlag = " --context " + shquote.Quote(k.Context)
		}
		return false, fmt.Errorf("the guest agent did not answer within %s of the VM starting; its console is `virtctl%s console cowork-%s -n %s`; its agent comes from the namespace's egress proxy, whose image must hold cowork-hostd of this build (another build's agent is refused)", d.agentTimeout, ctxFlag, d.name, k.Namespace)
	case err != nil && errors.Is(context.Cause(wctx), errAgentLate):
		return false, fmt.Errorf("the guest agent did not answer within %s of the VM starting; the guest's console is in %s: look there for where its boot stopped", d.agentTimeout, d.paths.SerialLog())
	case errors.As(err, &provErr):
		// The guest runs and its agent answers: keep it up for a look inside.
		d.events.emit(controlwire.PhaseFailed, "provisioning failed; the guest is up: look with `cowork exec sudo journalctl -u cowork-provision -n 50`; after `cowork stop`, `cowork init` retries it", err)
		return false, nil
	}
	return err == nil, err
}

// serveGuest serves the guest's agent on agent.sock, keeps its clock on
// the host's, and reports the instance ready if it is provisioned.
func (d *Daemon) serveGuest(life context.Context, provisioned bool) error {
	relay, err := unixsock.Listen(d.paths.AgentSock())
	if err != nil {
		return err
	}
	go d.relay(life, relay)
	go d.watchClock(life)
	go d.watchClaim(life)
	if provisioned {
		// Ready only now that agent.sock serves: a client told "ready"
		// connects at once, and must find it.
		d.mu.Lock()
		d.ready = true
		d.mu.Unlock()
		d.events.emit(controlwire.PhaseReady, "ready", nil)
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
	id := d.cfg.InstanceID
	if id == "" {
		id = "cowork-" + d.name
	}
	return cidata.Write(d.paths.CIData(), cidata.CIData{
		InstanceID: id,
		Arch:       d.cfg.Arch,
		Guest:      GuestFor(d.cfg),
	})
}

// GuestFor is what the guest of an instance with cfg is set up as: its
// cloud-config's inputs, the provisioning among them.
func GuestFor(cfg *instance.Config) image.Guest {
	uid := cfg.GuestUID
	if uid <= 0 {
		uid = 1000
	}
	packages, commands := image.DefaultPackages, image.DefaultProvision
	if p := cfg.Provision; p != nil {
		packages, commands = p.Packages, p.Commands
	}
	g := image.Guest{
		Hostname:  guestHostname,
		User:      "cowork",
		UID:       uid,
		ShareTag:  instance.ShareTag,
		ProxyURL:  fmt.Sprintf("http://%s:%d", netstack.GatewayIP, netstack.ProxyPort),
		NoProxy:   "localhost,127.0.0.1,::1,.cowork.internal," + netstack.Subnet,
		Packages:  packages,
		Provision: commands,
		MAC:       guestMACOf(cfg).String(),
	}
	for _, w := range cfg.With {
		if w == instance.WithDocker { // Validate refuses any other
			g = image.WithDocker(g)
		}
	}
	return g
}

// guestHostname is every guest's hostname.
const guestHostname = "cowork"

// guestMAC is the guest's MAC address: the config's (a fork keeps its
// parent's, which its saved NIC holds), else one derived from its name.
func (d *Daemon) guestMAC() net.HardwareAddr { return guestMACOf(d.cfg) }

func guestMACOf(cfg *instance.Config) net.HardwareAddr {
	if cfg.MAC != "" {
		if mac, err := net.ParseMAC(cfg.MAC); err == nil { // Validate checked it
			return mac
		}
	}
	return netstack.GuestMAC(cfg.Name)
}
