package hostd

import (
	"context"
	"errors"
	"os"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/coworkhq/cowork/hostd/agentclient"
	"github.com/coworkhq/cowork/hostd/agentrpc"
	"github.com/coworkhq/cowork/hostd/controlwire"
	"github.com/coworkhq/cowork/hostd/machine/machinetest"
	"github.com/coworkhq/cowork/hostd/netstack"
	"github.com/coworkhq/cowork/internal/buildinfo"
	"github.com/coworkhq/cowork/units"
)

// A boot tells its story in order, and once ready hostd reports the
// instance, serves its agent on agent.sock and has recorded it in the
// instance's folder.
func TestBootToReady(t *testing.T) {
	h := newHostdTest(t, machinetest.Guest{})
	r, m := h.ready(t)
	evs := r.seen
	checkPhases(t, evs, controlwire.PhaseVMStarted, controlwire.PhaseAgentConnected, controlwire.PhaseReady)
	if msg := evs[0].Message; msg != "VM started (machinetest, none)" {
		t.Errorf("VM_STARTED says %q", msg)
	}
	if msg := evs[1].Message; msg != "agent connected (version "+buildinfo.Version+")" {
		t.Errorf("AGENT_CONNECTED says %q", msg)
	}

	st := r.status()
	if !st.Ready || st.State != "running" || st.Name != h.cfg.Name || st.CPUs != 2 || st.MemoryBytes != int64(256*units.MiB) ||
		st.Workspace != h.cfg.Workspace || st.Arch != "arm64" || st.HostdPID != os.Getpid() ||
		st.AgentVersion != buildinfo.Version || st.BootID == "" || st.GuestIP != netstack.GuestIP ||
		st.Backend != "machinetest" || st.Accelerator != "none" || st.Started.IsZero() || st.Error != "" || st.Network == nil {
		t.Errorf("status of a ready instance: %v", st)
	}
	// The boot's phases: hostd's own measure, and none of the agent's
	// claims, which here are the test machine's uptime, far longer than
	// the VM has lived.
	if b := st.Boot; b == nil || b.AgentAnsweredMs < 0 || b.UptimeMs != 0 || b.UserspaceMs != 0 || b.AgentListeningMs != 0 {
		t.Errorf("boot phases of a ready instance: %+v", b)
	}

	if b, err := os.ReadFile(h.paths.PidFile()); err != nil || strings.TrimSpace(string(b)) != strconv.Itoa(os.Getpid()) {
		t.Errorf("pid file: %q, %v", b, err)
	}
	if _, err := os.Stat(h.paths.Provisioned()); err != nil {
		t.Errorf("the guest is provisioned, yet: %v", err)
	}
	// agent.sock reaches the guest's agent.
	client, err := agentrpc.New(agentclient.UnixDialer(h.paths.AgentSock()))
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	ctx, cancel := context.WithTimeout(context.Background(), patience)
	defer cancel()
	if info, err := client.Info(ctx); err != nil || info.Version != buildinfo.Version {
		t.Errorf("Info through agent.sock: %v, %v", info, err)
	}

	// The VM hostd asked for is the instance's.
	c := m.Config
	if c.Disk != h.paths.Disk() || len(c.Shares) != 1 || c.Shares[0].Dir != h.cfg.Workspace || c.Kernel != h.paths.Kernel() || c.CPUs != 2 ||
		c.CIData != h.paths.CIData() || c.RunDir != h.paths.Run() || c.PowerOff == nil || c.MAC.String() != netstack.GuestMAC(h.cfg.Name).String() {
		t.Errorf("machine config: %+v", c)
	}
	if _, err := os.Stat(c.CIData); err != nil {
		t.Errorf("the seed disk: %v", err)
	}
	if s := m.Stats(); s.ClockSets == 0 || len(s.Stops) != 0 || s.End != machinetest.Running {
		t.Errorf("machine: %+v; want its clock set, and running", s)
	}
}

// `cowork stop` asks the guest's agent to power off, and hostd leaves
// once it has: a clean stop, nothing left behind.
func TestStopOnRequest(t *testing.T) {
	h := newHostdTest(t, machinetest.Guest{})
	r, m := h.ready(t)
	r.stop(&controlwire.StopRequest{TimeoutMS: 60_000})
	if err := r.wait(); err != nil {
		t.Errorf("Run after a stop: %v", err)
	}
	s := m.Stats()
	if s.End != machinetest.PoweredOff || !slices.Equal(s.Stops, []time.Duration{time.Minute}) || s.PowerOffs != 1 {
		t.Errorf("machine: %+v; want one Stop with the timeout asked, the agent powering the guest off", s)
	}
	evs := r.all()
	checkPhases(t, evs[3:], controlwire.PhaseStopped)
	if ev := evs[len(evs)-1]; ev.Message != "stopped" || ev.Error != "" {
		t.Errorf("the last event: %v", ev)
	}
	if why := lastStop(t, h.paths); why != "" {
		t.Errorf("a clean stop left a stop reason: %q", why)
	}
	checkGone(t, h.paths)
}

// A guest that does not power off within the stop's timeout has its power
// cut; with force, it is cut at once and the agent is not asked. Either
// way the stop was asked for: no error.
func TestStopForced(t *testing.T) {
	for _, c := range []struct {
		name string
		req  *controlwire.StopRequest
		want time.Duration
	}{
		{"timeout", &controlwire.StopRequest{TimeoutMS: 1}, time.Millisecond},
		{"force", &controlwire.StopRequest{Force: true, TimeoutMS: 60_000}, 0},
	} {
		t.Run(c.name, func(t *testing.T) {
			h := newHostdTest(t, machinetest.Guest{DeafToPowerOff: true})
			r, m := h.ready(t)
			r.stop(c.req)
			if err := r.wait(); err != nil {
				t.Errorf("Run after a forced stop: %v", err)
			}
			s := m.Stats()
			if s.End != machinetest.PowerCut || !slices.Equal(s.Stops, []time.Duration{c.want}) {
				t.Errorf("machine: %+v; want its power cut by one Stop(%s)", s, c.want)
			}
			if c.req.Force && s.PowerOffs != 0 {
				t.Errorf("a forced stop asked the agent to power off %d times", s.PowerOffs)
			}
			if evs := r.all(); evs[len(evs)-1].Phase != controlwire.PhaseStopped || evs[len(evs)-1].Error != "" {
				t.Errorf("events: %v", evs)
			}
			checkGone(t, h.paths)
		})
	}
}

// A VM that goes away by itself is hostd's error and end: the reason,
// with the kernel's panic from the console, is in the events, in
// last-stop.txt for status, and in what Run returns.
func TestCrashWhileRunning(t *testing.T) {
	h := newHostdTest(t, machinetest.Guest{})
	r, m := h.ready(t)
	crash := errors.New("QEMU exited on its own (signal: killed)")
	m.Print(t, "[   42.1] Kernel panic - not syncing: Attempted to kill init!\n")
	m.Crash(crash)
	err := r.wait()
	if !errors.Is(err, crash) || !strings.Contains(err.Error(), "the guest kernel panicked (Kernel panic - not syncing: Attempted to kill init!); its console is in "+h.paths.SerialLog()) {
		t.Errorf("Run after a crash: %v", err)
	}
	evs := r.all()
	checkPhases(t, evs[3:], controlwire.PhaseStopped)
	if ev := evs[len(evs)-1]; ev.Message != "the VM stopped unexpectedly" || err == nil || ev.Error != err.Error() {
		t.Errorf("the last event: %v", ev)
	}
	if why := lastStop(t, h.paths); err == nil || why != err.Error()+"\n" {
		t.Errorf("last-stop.txt: %q", why)
	}
	if s := m.Stats(); len(s.Stops) != 0 {
		t.Errorf("a crashed VM was stopped: %+v", s)
	}
	checkGone(t, h.paths)
}

// A VM that goes away before its agent answered fails the boot.
func TestCrashDuringBoot(t *testing.T) {
	h := newHostdTest(t, machinetest.Guest{NoAgent: true})
	r := h.start(t)
	m := h.host.Next(t)
	r.until(controlwire.PhaseVMStarted)
	if st := r.status(); st.Ready || st.State != "running" || st.AgentVersion != "" || st.GuestIP != "" || st.Backend != "machinetest" {
		t.Errorf("status while the guest boots: %v", st)
	}
	crash := errors.New("QEMU exited on its own (exit status 1)")
	m.Crash(crash)
	if err := r.wait(); !errors.Is(err, crash) {
		t.Errorf("Run after a crash during the boot: %v", err)
	}
	evs := r.all()
	checkPhases(t, evs, controlwire.PhaseVMStarted, controlwire.PhaseFailed)
	if ev := evs[1]; ev.Message != "boot failed" || ev.Error != crash.Error() {
		t.Errorf("the failure: %v", ev)
	}
	if why := lastStop(t, h.paths); why != crash.Error()+"\n" {
		t.Errorf("last-stop.txt: %q", why)
	}
	checkGone(t, h.paths)
}

// A VM that cannot start fails the boot, and nothing is left to stop.
func TestStartFails(t *testing.T) {
	why := errors.New("qemu-system-aarch64 not found, which runs arm64 guests; install QEMU")
	h := newHostdTest(t, machinetest.Guest{StartErr: why})
	r := h.start(t)
	m := h.host.Next(t)
	if err := r.wait(); !errors.Is(err, why) {
		t.Errorf("Run: %v", err)
	}
	evs := r.all()
	checkPhases(t, evs, controlwire.PhaseFailed)
	if len(evs) == 1 && evs[0].Error != why.Error() {
		t.Errorf("the failure: %v", evs[0])
	}
	if s := m.Stats(); s.Started || len(s.Stops) != 0 {
		t.Errorf("machine: %+v", s)
	}
	checkGone(t, h.paths)
}

// A guest whose agent never answers fails the boot after the agent's
// time, saying so, and its VM's power is cut.
func TestAgentNeverAnswers(t *testing.T) {
	h := newHostdTest(t, machinetest.Guest{NoAgent: true})
	h.opts.AgentTimeout = 10 * time.Millisecond
	r := h.start(t)
	m := h.host.Next(t)
	err := r.wait()
	want := "the guest agent did not answer within 10ms of the VM starting; the guest's console is in " + h.paths.SerialLog() + ": look there for where its boot stopped"
	if err == nil || err.Error() != want {
		t.Errorf("Run: %v\nwant: %s", err, want)
	}
	evs := r.all()
	checkPhases(t, evs, controlwire.PhaseVMStarted, controlwire.PhaseFailed)
	if ev := evs[len(evs)-1]; ev.Error != want {
		t.Errorf("the failure: %v", ev)
	}
	if s := m.Stats(); s.End != machinetest.PowerCut || !slices.Equal(s.Stops, []time.Duration{0}) {
		t.Errorf("machine: %+v; want its power cut", s)
	}
	if why := lastStop(t, h.paths); why != want+"\n" {
		t.Errorf("last-stop.txt: %q", why)
	}
	checkGone(t, h.paths)
}
