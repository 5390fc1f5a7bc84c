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

	qemu     *process
	virtiofs *process
	monitor  *qmp.SocketMonitor
	agent    *agentChannel

	mu       sync.Mutex
	state    machine.State
	stopping bool
	done     chan struct{}
	err      error
}

var _ machine.Machine = (*VM)(nil)

// New prepares a VM; Start runs it.
func New(cfg machine.Config, log *slog.Logger) (*VM, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	return &VM{cfg: cfg, log: log, run: runPaths{cfg.RunDir}, state: machine.Starting, done: make(chan struct{})}, nil
}

// Backend reports QEMU and the accelerator in use.
func (v *VM) Backend() (string, string) { return "qemu", v.accel }

// Start launches virtiofsd and QEMU and connects to QMP and the agent port.
// On error nothing it started is left running.
func (v *VM) Start(ctx context.Context) (err error) {
	bin, err := exec.LookPath(binary(v.cfg.Arch))
	if err != nil {
		return fmt.Errorf("%s not found, which runs %s guests; install QEMU (%s)", binary(v.cfg.Arch), v.cfg.Arch, installHint(v.cfg.Arch))
	}
	v.accel = Accelerator(bin, v.cfg.Arch, v.log)
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

	if v.cfg.ShareDir != "" {
		if v.virtiofs, err = startVirtiofsd(ctx, v.cfg.ShareDir, v.run.virtiofs(), v.cfg.ShareUID, v.cfg.ShareGID, v.log); err != nil {
			return err
		}
	}

	cmd := exec.Command(bin, args(&v.cfg, v.accel, code)...)
	cmd.ExtraFiles = []*os.File{v.cfg.Network, v.cfg.Console} // networkFD, consoleFD
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

	if err := waitForSocket(ctx, v.run.qmp(), v.qemu.exited); err != nil {
		return v.startFailed(ctx, err)
	}
	v.monitor, err = qmp.NewSocketMonitor("unix", v.run.qmp(), 5*time.Second)
	if err == nil {
		err = v.monitor.Connect()
	}
	if err != nil {
		return v.startFailed(ctx, fmt.Errorf("connect to QMP: %w", err))
	}
	v.agent = newAgentChannel(v.run.agent(), v.log)
	events, err := v.monitor.Events(context.Background())
	if err == nil {
		go v.watchEvents(events)
	}

	v.setState(machine.Running)
	go v.watch()
	return nil
}

// watchEvents follows QMP events. When the guest closes the agent's port
// (the agent exited or restarted), the session on it is dropped at once:
// its streams fail now instead of waiting on an agent that is gone, and the
// next channel opens a new session with the agent that takes its place.
func (v *VM) watchEvents(events <-chan qmp.Event) {
	for ev := range events {
		if ev.Event != "VSERPORT_CHANGE" || ev.Data["id"] != agentPortID {
			continue
		}
		if open, _ := ev.Data["open"].(bool); !open {
			v.log.Warn("the guest closed the agent's port; dropping the agent session")
			v.agent.drop()
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

// watch waits for QEMU to exit and cleans up after it.
func (v *VM) watch() {
	err := <-v.qemu.exited
	v.agent.close()
	v.monitor.Disconnect()
	if v.virtiofs != nil {
		v.virtiofs.kill()
	}
	v.mu.Lock()
	if !v.stopping {
		v.err = v.qemuFailed(fmt.Errorf("the VM stopped unexpectedly (%v)", exitText(err)))
	}
	v.state = machine.Stopped
	v.mu.Unlock()
	close(v.done)
}

func exitText(err error) string {
	if err == nil {
		return "qemu exited"
	}
	return "qemu: " + err.Error()
}

func (v *VM) setState(s machine.State) {
	v.mu.Lock()
	v.state = s
	v.mu.Unlock()
}

// State is the VM's state.
func (v *VM) State() machine.State {
	v.mu.Lock()
	defer v.mu.Unlock()
	return v.state
}

// Done is closed once QEMU has exited and its helpers are gone.
func (v *VM) Done() <-chan struct{} { return v.done }

// Err says why the VM stopped when nobody asked it to.
func (v *VM) Err() error {
	v.mu.Lock()
	defer v.mu.Unlock()
	return v.err
}

// Stop presses the ACPI power button and waits up to timeout for the guest
// to power off, then ends QEMU.
func (v *VM) Stop(ctx context.Context, timeout time.Duration) error {
	v.mu.Lock()
	v.stopping = true
	if v.state != machine.Stopped {
		v.state = machine.Stopping
	}
	v.mu.Unlock()
	if timeout > 0 && v.monitor != nil {
		if _, err := v.monitor.Run([]byte(`{"execute":"system_powerdown"}`)); err != nil {
			v.log.Warn("system_powerdown", "err", err)
		}
		select {
		case <-v.done:
			return nil
		case <-time.After(timeout):
			v.log.Warn("guest did not power off in time; stopping qemu", "timeout", timeout)
		case <-ctx.Done():
		}
	}
	v.kill()
	<-v.done
	return nil
}

// kill ends QEMU and virtiofsd at once and waits until both are reaped.
func (v *VM) kill() {
	for _, p := range []*process{v.qemu, v.virtiofs} {
		if p != nil {
			p.kill()
		}
	}
}

// DialAgent opens a new stream to the guest agent.
func (v *VM) DialAgent(ctx context.Context) (net.Conn, error) {
	if v.agent == nil {
		return nil, errors.New("the VM is not running")
	}
	return v.agent.dial(ctx)
}
