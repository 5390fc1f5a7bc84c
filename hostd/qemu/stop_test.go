package qemu

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/coworkhq/cowork/hostd/machine"
)

// monitoredQEMU is a stand-in QEMU in the test's process: a process that
// runs until it is ended, and a QMP monitor on the run directory's socket
// that answers commands and sends the events a real one would.
type monitoredQEMU struct {
	t  *testing.T
	vm *VM
	// onPowerdown is what pressing the power button does (nil: nothing).
	onPowerdown func()
	// answer, when set, gives the reply to a command ("": the empty return).
	answer func(cmd string) string

	mu       sync.Mutex
	conn     net.Conn
	exiting  bool // exit closes the monitor itself, after its last event
	commands []string
}

// newFakeVM makes a VM on a monitoredQEMU, attached as Start attaches a real
// one; powerOff is its Config.PowerOff.
func newFakeVM(t *testing.T, powerOff func(context.Context) error) *monitoredQEMU {
	t.Helper()
	dir, err := os.MkdirTemp("", "qs") // short: a unix socket lives in it
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	v := &VM{cfg: machine.Config{PowerOff: powerOff}, log: slog.New(slog.NewTextHandler(io.Discard, nil)),
		run: runPaths{dir}}
	f := &monitoredQEMU{t: t, vm: v}
	ln, err := net.Listen("unix", v.run.qmp())
	if err != nil {
		t.Fatal(err)
	}
	go f.serve(ln)
	if v.qemu, err = start(exec.Command("sleep", "600"), io.NopCloser(nil)); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { v.qemu.kill() })
	// A real QEMU's monitor socket closes when it exits, however it does.
	go func() {
		for syscall.Kill(v.qemu.cmd.Process.Pid, 0) == nil {
			time.Sleep(10 * time.Millisecond)
		}
		f.mu.Lock()
		if f.conn != nil && !f.exiting {
			f.conn.Close()
		}
		f.mu.Unlock()
	}()
	if err := v.attach(); err != nil {
		t.Fatal(err)
	}
	return f
}

func (f *monitoredQEMU) serve(ln net.Listener) {
	c, err := ln.Accept()
	ln.Close()
	if err != nil {
		return
	}
	f.mu.Lock()
	f.conn = c
	f.mu.Unlock()
	fmt.Fprintln(c, `{"QMP": {"version": {"qemu": {"micro": 0, "minor": 2, "major": 7}, "package": ""}, "capabilities": ["oob"]}}`)
	// Commands come as JSON, not lines: QEMU reads a stream of objects.
	dec := json.NewDecoder(c)
	for {
		var cmd json.RawMessage
		if err := dec.Decode(&cmd); err != nil {
			return
		}
		f.mu.Lock()
		f.commands = append(f.commands, string(cmd))
		answer := f.answer
		f.mu.Unlock()
		reply := `{"return": {}}`
		if answer != nil {
			if r := answer(string(cmd)); r != "" {
				reply = r
			}
		}
		f.send(reply)
		if strings.Contains(string(cmd), "system_powerdown") && f.onPowerdown != nil {
			go f.onPowerdown()
		}
	}
}

// send writes a line to hostd: a reply, or an event.
func (f *monitoredQEMU) send(line string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	fmt.Fprintln(f.conn, line)
}

// sent lists the commands hostd ran after the handshake, by name, in order.
func (f *monitoredQEMU) sent() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	var names []string
	for _, c := range f.commands {
		var cmd struct{ Execute string }
		json.Unmarshal([]byte(c), &cmd)
		if cmd.Execute != "qmp_capabilities" {
			names = append(names, cmd.Execute)
		}
	}
	return names
}

// powerdowns counts the presses of the power button.
func (f *monitoredQEMU) powerdowns() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	n := 0
	for _, c := range f.commands {
		if strings.Contains(c, "system_powerdown") {
			n++
		}
	}
	return n
}

// exit ends QEMU as a real one ends: its SHUTDOWN event with reason ("":
// none, as when it crashes), the process gone, its monitor closed. The
// event is sent once the process has been reaped: the slowest it may
// come, after hostd has seen QEMU exit.
func (f *monitoredQEMU) exit(reason string) {
	f.mu.Lock()
	f.exiting = true
	f.mu.Unlock()
	pid := f.vm.qemu.cmd.Process.Pid
	f.vm.qemu.cmd.Process.Kill()
	for syscall.Kill(pid, 0) == nil {
		time.Sleep(time.Millisecond)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if reason != "" {
		fmt.Fprintf(f.conn, `{"event": "SHUTDOWN", "data": {"guest": true, "reason": %q}, "timestamp": {"seconds": 1, "microseconds": 2}}`+"\n", reason)
	}
	f.conn.Close()
}

func waitDone(t *testing.T, v *VM) {
	t.Helper()
	select {
	case <-v.Done():
	case <-time.After(time.Minute):
		t.Fatal("the VM never stopped")
	}
}

// A VM that stops when nobody asked says why: what the guest did, from
// QEMU's SHUTDOWN event, rather than only that QEMU exited.
func TestUnaskedStopSaysWhatTheGuestDid(t *testing.T) {
	for reason, want := range map[string]string{
		"guest-shutdown": "the guest powered itself off",
		"guest-reset":    "the guest rebooted (or reset after a crash), which stops a cowork VM",
		"guest-panic":    "the guest kernel panicked",
		"host-signal":    "QEMU was told to quit by a signal from outside cowork",
		"":               "QEMU exited on its own (qemu: signal: killed)",
	} {
		f := newFakeVM(t, nil)
		f.exit(reason)
		waitDone(t, f.vm)
		if err := f.vm.Err(); err == nil || !strings.HasPrefix(err.Error(), want) {
			t.Errorf("reason %q: %v, want %q", reason, err, want)
		}
		if s := f.vm.State(); s != machine.Stopped {
			t.Errorf("reason %q: state %s", reason, s)
		}
	}
}

// Stop asks through Config.PowerOff (hostd's agent) first; the guest that
// then powers off stopped as asked, not "unexpectedly".
func TestStopAsksTheGuestThroughPowerOff(t *testing.T) {
	var f *monitoredQEMU
	asked := 0
	f = newFakeVM(t, func(context.Context) error {
		asked++
		go f.exit("guest-shutdown") // the agent powers the guest off
		return nil
	})
	if err := f.vm.Stop(context.Background(), time.Minute); err != nil {
		t.Fatal(err)
	}
	if err := f.vm.Err(); err != nil {
		t.Errorf("a guest that powered off as asked: %v", err)
	}
	if asked != 1 || f.powerdowns() != 0 {
		t.Errorf("asked the agent %d times, pressed the button %d times; want the agent once", asked, f.powerdowns())
	}
}

// Without an agent that answers, the power button asks; the guest that
// then powers off stopped as asked.
func TestStopFallsBackToThePowerButton(t *testing.T) {
	for _, powerOff := range []func(context.Context) error{
		nil,
		func(context.Context) error { return errors.New("the guest agent has not connected") },
	} {
		f := newFakeVM(t, powerOff)
		f.onPowerdown = func() { f.exit("guest-shutdown") }
		if err := f.vm.Stop(context.Background(), time.Minute); err != nil {
			t.Fatal(err)
		}
		if err := f.vm.Err(); err != nil || f.powerdowns() != 1 {
			t.Errorf("err %v after %d presses of the button, want nil after one", err, f.powerdowns())
		}
	}
}

// A guest that does not power off loses its power after the timeout; with
// no timeout (force) at once, without asking. Either way as asked.
func TestStopCutsThePower(t *testing.T) {
	for _, timeout := range []time.Duration{0, 50 * time.Millisecond} {
		asked := 0
		f := newFakeVM(t, func(context.Context) error { asked++; return nil })
		if err := f.vm.Stop(context.Background(), timeout); err != nil {
			t.Fatal(err)
		}
		waitDone(t, f.vm)
		if err := f.vm.Err(); err != nil {
			t.Errorf("timeout %s: %v", timeout, err)
		}
		if want := map[bool]int{true: 0, false: 1}[timeout == 0]; asked != want {
			t.Errorf("timeout %s: asked the guest %d times, want %d", timeout, asked, want)
		}
	}
}
