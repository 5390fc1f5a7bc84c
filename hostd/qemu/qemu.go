// Package qemu runs a machine.Config under QEMU (Linux hosts, and Macs for
// development), with virtiofsd for the share and the agent on a
// virtio-serial port carrying yamux streams.
package qemu

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"sync"
	"time"

	"github.com/digitalocean/go-qemu/qmp"

	"github.com/coworkhq/cowork/hostd/machine"
	"github.com/coworkhq/cowork/internal/sysproc"
)

// VM is a QEMU process and its helpers.
type VM struct {
	cfg   machine.Config
	log   *slog.Logger
	accel string
	run   runPaths

	qemu    *process
	monitor *qmp.SocketMonitor
	agent   *agentChannel
	// ram is the memfd the guest's RAM lives in (ramFD), open for Save
	// until QEMU has exited: then it is closed, which frees the memory.
	ram *os.File

	// eventsDone is closed once QEMU's events are all read: its monitor's
	// socket ends when QEMU exits.
	eventsDone chan struct{}

	machine.Lifecycle // State, Done, Err; Done is closed once QEMU has exited and its helpers are gone

	mu       sync.Mutex
	shutdown string // the reason of QEMU's SHUTDOWN event, if it sent one
	// virtiofs are the shares' servers and plugged whether their devices
	// are in the guest, both by the share's index: a share is served and
	// plugged from boot, neither once DetachShare let it go (nor after a
	// restore, until it or AttachShare plugs it in).
	virtiofs []*process
	plugged  []bool
	// pending are servers a restore started that were not up when the
	// guest was loaded: AttachShare plugs them in (or stop ends them).
	pending <-chan []*process
	// serveShare, when set, stands in for starting share i's virtiofsd
	// (tests).
	serveShare func(ctx context.Context, i int) (*process, error)
	// shareGone, while DetachShare waits, gets the index of each share
	// QEMU's DEVICE_DELETED event says the guest let go of; deleted keeps
	// it, by index, whenever it came, until the share is plugged again (a
	// guest may eject its share on its own).
	shareGone chan int
	deleted   map[int]bool
}

var _ machine.Machine = (*VM)(nil)

// New prepares a VM; Start runs it.
func New(cfg machine.Config, log *slog.Logger) (*VM, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	return &VM{cfg: cfg, log: log, run: runPaths{cfg.RunDir}}, nil
}

// Backend reports QEMU and the accelerator in use.
func (v *VM) Backend() (string, string) { return "qemu", v.accel }

// Start launches virtiofsd and QEMU and connects to QMP and the agent port.
// On error nothing it started is left running.
func (v *VM) Start(ctx context.Context) error {
	return v.launch(ctx, nil)
}

// launch starts QEMU: booting the guest, or, given a saved guest's RAM
// (its memfd, filled), waiting paused for its devices' state (-incoming
// defer) with the share left out. ram becomes the VM's on success; on
// error nothing launch started is left running, and ram is closed.
func (v *VM) launch(ctx context.Context, ram *os.File) (err error) {
	incoming := ram != nil
	defer func() {
		if err != nil && ram != nil {
			ram.Close()
		}
	}()
	bin, err := exec.LookPath(binary(v.cfg.Arch))
	if err != nil {
		return fmt.Errorf("%s not found, which runs %s guests; install QEMU (%s)", binary(v.cfg.Arch), v.cfg.Arch, installHint(v.cfg.Arch))
	}
	v.accel = newAccelProbe(v.cfg.CacheDir).accelerator(bin, v.cfg.Arch, v.log)
	if err := os.MkdirAll(v.cfg.RunDir, 0o700); err != nil {
		return err
	}
	var code string
	if v.cfg.Kernel == "" {
		fw, err := findFirmware(v.cfg.Arch, firmware[v.cfg.Arch])
		if err != nil {
			return err
		}
		if code, err = prepareFirmware(v.cfg.Arch, fw, v.cfg.EFIVars, v.cfg.RunDir); err != nil {
			return err
		}
	}
	defer func() {
		if err != nil {
			v.kill()
		}
	}()

	if !incoming {
		if err := v.startShareServers(ctx); err != nil {
			return err
		}
	}
	if ram == nil {
		if ram, err = newGuestRAM(v.cfg.Memory); err != nil {
			return err
		}
	}

	cmd := exec.Command(bin, args(&v.cfg, launch{accel: v.accel, firmwareCode: code, incoming: incoming})...)
	cmd.ExtraFiles = []*os.File{v.cfg.Network, v.cfg.Console, ram} // networkFD, consoleFD, ramFD
	cmd.SysProcAttr = sysproc.Attr(true)
	qlog, err := helperLog(v.run.file("qemu.log"))
	if err != nil {
		return err
	}
	cmd.Stdout, cmd.Stderr = qlog, qlog
	v.log.Info("starting qemu", "binary", bin, "accel", v.accel, "args", cmd.Args[1:])
	if v.qemu, err = start(cmd, qlog); err != nil {
		return fmt.Errorf("start %s: %w", bin, err)
	}
	v.ram, ram = ram, nil // closed by watch once QEMU has exited

	if err := waitForSocket(ctx, v.run.qmp(), v.qemu.exited); err != nil {
		return v.startFailed(ctx, err)
	}
	if err := v.attach(); err != nil {
		return v.startFailed(ctx, err)
	}
	return nil
}

// attach connects to the started QEMU's monitor, follows its events and
// watches it until it exits.
func (v *VM) attach() (err error) {
	v.monitor, err = qmp.NewSocketMonitor("unix", v.run.qmp(), 5*time.Second)
	if err == nil {
		err = v.monitor.Connect()
	}
	if err != nil {
		return fmt.Errorf("connect to QMP: %w", err)
	}
	v.agent = newAgentChannel(v.run.agent(), v.log)
	v.eventsDone = make(chan struct{})
	if events, err := v.monitor.Events(context.Background()); err == nil {
		go v.watchEvents(events)
	} else {
		close(v.eventsDone)
	}
	v.SetState(machine.Running)
	go v.watch()
	return nil
}

// watchEvents follows QMP events. SHUTDOWN says why QEMU is about to
// exit: the guest powered off, rebooted (-no-reboot makes that an exit),
// or a signal told QEMU to quit. When the guest closes the agent's port
// (the agent exited or restarted), the session on it is dropped at once:
// its streams fail now instead of waiting on an agent that is gone, and the
// next channel opens a new session with the agent that takes its place.
func (v *VM) watchEvents(events <-chan qmp.Event) {
	defer close(v.eventsDone)
	for ev := range events {
		switch {
		case ev.Event == "SHUTDOWN":
			reason, _ := ev.Data["reason"].(string)
			v.mu.Lock()
			v.shutdown = reason
			v.mu.Unlock()
		case ev.Event == "DEVICE_DELETED":
			id, _ := ev.Data["device"].(string)
			if i := shareIndex(&v.cfg, id); i >= 0 {
				v.mu.Lock()
				if v.deleted == nil {
					v.deleted = map[int]bool{}
				}
				v.deleted[i] = true
				if v.shareGone != nil {
					select {
					case v.shareGone <- i:
					default:
					}
				}
				v.mu.Unlock()
			}
		case ev.Event == "VSERPORT_CHANGE" && ev.Data["id"] == agentPortID:
			if open, _ := ev.Data["open"].(bool); !open {
				v.log.Warn("the guest closed the agent's port; dropping the agent session")
				v.agent.drop()
			}
		}
	}
}

// qemuFailed adds QEMU's own complaint to err.
func (v *VM) qemuFailed(err error) error {
	if msg := tail(v.run.file("qemu.log"), 5); msg != "" {
		return fmt.Errorf("%w; qemu said: %s", err, msg)
	}
	return err
}

// eventsDrain bounds the wait for QEMU's last events once it has exited:
// its monitor's socket closed with it, so they are read at once.
const eventsDrain = 5 * time.Second

// watch waits for QEMU to exit and cleans up after it. A VM nobody asked
// to stop gets its reason (see unasked) from the last events QEMU sent,
// read before the monitor is let go.
func (v *VM) watch() {
	err := <-v.qemu.exited
	select {
	case <-v.eventsDone:
	case <-time.After(eventsDrain):
		v.log.Warn("QEMU's last events were not read in time")
	}
	v.agent.close()
	v.monitor.Disconnect()
	v.stopShareServers()
	v.closeRAM()
	v.Exit(v.unasked(err))
}

// unasked says why QEMU exited, for when hostd did not ask it to: what
// the guest did, from QEMU's SHUTDOWN event, or else how QEMU exited, with
// its last words.
func (v *VM) unasked(exit error) error {
	v.mu.Lock()
	shutdown := v.shutdown
	v.mu.Unlock()
	switch shutdown {
	case "guest-shutdown":
		return errors.New("the guest powered itself off")
	case "guest-reset":
		return errors.New("the guest rebooted (or reset after a crash), which stops a cowork VM")
	case "guest-panic":
		return errors.New("the guest kernel panicked")
	case "host-signal":
		return fmt.Errorf("QEMU was told to quit by a signal from outside cowork (%s)", exitText(exit))
	}
	return v.qemuFailed(fmt.Errorf("QEMU exited on its own (%v)", exitText(exit)))
}

func exitText(err error) string {
	if err == nil {
		return "qemu exited"
	}
	return "qemu: " + err.Error()
}

// Stop asks the guest to power off (Config.PowerOffWithin: the agent, else
// the power button) and waits up to timeout for it to, then ends QEMU.
// The VM counts as stopped on purpose from the first moment, so a guest
// that powers off as asked is no surprise (Err stays nil).
func (v *VM) Stop(ctx context.Context, timeout time.Duration) error {
	v.MarkStopping()
	if timeout > 0 && v.monitor != nil {
		err := v.cfg.PowerOffWithin(ctx, timeout, v.powerButton, v.Done())
		if err == nil {
			return nil
		}
		v.log.Warn("stopping qemu", "why", err)
	}
	v.kill()
	<-v.Done()
	return nil
}

// powerButton presses the VM's power button (ACPI on x86, a GPIO key on
// arm64's virt machine).
func (v *VM) powerButton() error {
	_, err := v.monitor.Run([]byte(`{"execute":"system_powerdown"}`))
	return err
}

// kill ends QEMU and virtiofsd at once and waits until both are reaped.
func (v *VM) kill() {
	if v.qemu != nil {
		v.qemu.kill()
	}
	v.stopShareServers()
	v.closeRAM() // QEMU is gone, and its mapping with it
}

// closeRAM lets the guest's memory go, once QEMU no longer maps it.
func (v *VM) closeRAM() {
	v.mu.Lock()
	defer v.mu.Unlock()
	if v.ram != nil {
		v.ram.Close()
		v.ram = nil
	}
}

// DialAgent opens a new stream to the guest agent.
func (v *VM) DialAgent(ctx context.Context) (net.Conn, error) {
	if v.agent == nil {
		return nil, errors.New("the VM is not running")
	}
	return v.agent.dial(ctx)
}
