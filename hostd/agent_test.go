package hostd

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/coworkhq/cowork/hostd/agentclient"
	"github.com/coworkhq/cowork/hostd/agentrpc"
	"github.com/coworkhq/cowork/hostd/controlwire"
	"github.com/coworkhq/cowork/hostd/instance"
	"github.com/coworkhq/cowork/hostd/machine"
	"github.com/coworkhq/cowork/internal/agentcall"
	"github.com/coworkhq/cowork/internal/termsafe"
)

// provisioningAgent is a guest agent whose Provisioning calls are
// scripted: the nth call sends streams[n]'s statuses, then ends: with an
// error line when err is set, by closing the channel otherwise (block
// waits for the client to go first). Without streams it is an agent
// older than the call.
type provisioningAgent struct {
	streams []provisioningScript
	calls   chan int
	info    func() *agentcall.Info
}

type provisioningScript struct {
	send  []*agentcall.ProvisioningStatus
	err   error
	block bool
}

// serve answers one call channel as the agent would.
func (a *provisioningAgent) serve(c net.Conn) {
	defer c.Close()
	head := make([]byte, len(agentcall.Preface))
	var req agentcall.Request
	if _, err := io.ReadFull(c, head); err != nil || string(head) != agentcall.Preface {
		return
	}
	if err := agentcall.NewLineReader(c).Read(&req); err != nil {
		return
	}
	send := func(r *agentcall.Reply) error {
		b, err := agentcall.AppendLine(nil, r)
		if err == nil {
			_, err = c.Write(b)
		}
		return err
	}
	switch {
	case req.Method == agentcall.MethodInfo:
		send(&agentcall.Reply{Info: a.info()})
	case req.Method == agentcall.MethodProvisioning && a.streams != nil:
		n := <-a.calls
		a.calls <- n + 1
		s := a.streams[min(n, len(a.streams)-1)]
		for _, m := range s.send {
			if send(&agentcall.Reply{Provisioning: m}) != nil {
				return
			}
		}
		if s.block {
			io.Copy(io.Discard, c)
		}
		if s.err != nil {
			send(&agentcall.Reply{Error: s.err.Error(), Kind: agentcall.KindFailed})
		}
	default:
		send(&agentcall.Reply{Error: "unknown method", Kind: agentcall.KindUnimplemented})
	}
}

// provisioningVM is a VM that runs until stop is closed.
type provisioningVM struct {
	machine.Machine // nothing else is called
	stop            chan struct{}
}

func (m *provisioningVM) Done() <-chan struct{} { return m.stop }
func (m *provisioningVM) Err() error            { return nil }

// provisioningDaemon is a Daemon whose agent is a; only what following
// provisioning needs is set.
func provisioningDaemon(t *testing.T, a *provisioningAgent) (*Daemon, *provisioningVM) {
	t.Helper()
	if a.calls == nil {
		a.calls = make(chan int, 1)
		a.calls <- 0
	}
	if a.info == nil {
		a.info = func() *agentcall.Info { return &agentcall.Info{} }
	}
	dir, err := os.MkdirTemp("", "pv") // short: unix socket paths are limited
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	l, err := net.Listen("unix", filepath.Join(dir, "a.sock"))
	if err != nil {
		t.Fatal(err)
	}
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go a.serve(c)
		}
	}()
	t.Cleanup(func() { l.Close() })
	c, err := agentrpc.New(agentclient.UnixDialer(l.Addr().String()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	vm := &provisioningVM{stop: make(chan struct{})}
	return &Daemon{
		paths:  instance.Paths(dir),
		log:    slog.New(slog.NewTextHandler(io.Discard, nil)),
		events: newEvents(),
		vm:     vm,
		agent:  c,
		info:   agentInfo{version: "0.9.0"},
	}, vm
}

// runProvisioning runs waitForProvisioning with a generous deadline and
// returns the messages of the events it emitted, and its error.
func runProvisioning(t *testing.T, d *Daemon) ([]string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	err := d.waitForProvisioning(ctx, false)
	if ctx.Err() != nil {
		t.Fatal("waitForProvisioning did not return")
	}
	past, _, stop := d.events.subscribe()
	stop()
	var msgs []string
	for _, ev := range past {
		if ev.Phase != controlwire.PhaseProvisioning {
			t.Errorf("event of phase %v: %q", ev.Phase, ev.Message)
		}
		msgs = append(msgs, ev.Message)
	}
	return msgs, err
}

func provRunning(step, stage, line string) *agentcall.ProvisioningStatus {
	return &agentcall.ProvisioningStatus{State: agentcall.StateRunning, Step: step, Stage: stage, LastLine: line}
}

func provEnded(state agentcall.State, line string) *agentcall.ProvisioningStatus {
	return &agentcall.ProvisioningStatus{State: state, LastLine: line}
}

const firstEvent = "provisioning the guest (first boot: installing the toolchain and Claude Code)"

// Each new message becomes one event, the same message twice one event;
// the guest reported provisioned, hostd records it.
func TestProvisioningRunningThenDone(t *testing.T) {
	d, _ := provisioningDaemon(t, &provisioningAgent{streams: []provisioningScript{{send: []*agentcall.ProvisioningStatus{
		provRunning("", "", ""),
		provRunning("", "modules-config", ""),
		provRunning("installing packages", "modules-config", "Unpacking tree (2.1.0-1) ..."),
		provRunning("installing packages", "modules-config", "Unpacking tree (2.1.0-1) ..."),
		provRunning("", "", "Generating locales..."),
		provEnded(agentcall.StateProvisioned, "done"),
	}}}})
	msgs, err := runProvisioning(t, d)
	if err != nil {
		t.Fatalf("waitForProvisioning: %v", err)
	}
	want := []string{
		firstEvent,
		"provisioning: cloud-init modules-config",
		"provisioning: installing packages: Unpacking tree (2.1.0-1) ...",
		"provisioning: Generating locales...",
	}
	if strings.Join(msgs, "\n") != strings.Join(want, "\n") {
		t.Errorf("events:\n%s\nwant:\n%s", strings.Join(msgs, "\n"), strings.Join(want, "\n"))
	}
	if _, err := os.Stat(d.paths.Provisioned()); err != nil {
		t.Errorf("provisioning not recorded: %v", err)
	}
}

func TestProvisioningFailed(t *testing.T) {
	d, _ := provisioningDaemon(t, &provisioningAgent{streams: []provisioningScript{{send: []*agentcall.ProvisioningStatus{
		provRunning("installing packages", "", "Reading package lists..."),
		provEnded(agentcall.StateFailed, "E: Unable to locate package nosuch"),
	}}}})
	_, err := runProvisioning(t, d)
	var perr *provisionError
	if !errors.As(err, &perr) || err.Error() != "provisioning failed: the provisioning script failed; last output: E: Unable to locate package nosuch" {
		t.Errorf("a failed unit: %v", err)
	}
	if _, err := os.Stat(d.paths.Provisioned()); err == nil {
		t.Error("a failed provisioning was recorded as complete")
	}
}

func TestProvisioningFinishedWithoutMarker(t *testing.T) {
	d, _ := provisioningDaemon(t, &provisioningAgent{streams: []provisioningScript{{send: []*agentcall.ProvisioningStatus{
		provEnded(agentcall.StateFinishedUnprovisioned, "Cloud-init v. 22.4 finished"),
	}}}})
	_, err := runProvisioning(t, d)
	var perr *provisionError
	if !errors.As(err, &perr) || err.Error() != "provisioning failed: cloud-init finished without marking the guest provisioned; last output: Cloud-init v. 22.4 finished" {
		t.Errorf("finished without the marker: %v", err)
	}
}

// A stream that breaks off, or ends without a verdict (the agent
// restarted), is opened again while Info does not say the guest is
// provisioned.
func TestProvisioningStreamReopens(t *testing.T) {
	a := &provisioningAgent{streams: []provisioningScript{
		{send: []*agentcall.ProvisioningStatus{provRunning("updating package lists", "", "")}, err: errors.New("agent restarting")},
		{send: []*agentcall.ProvisioningStatus{provRunning("updating package lists", "", "")}},
		{send: []*agentcall.ProvisioningStatus{provRunning("installing packages", "", ""), provEnded(agentcall.StateProvisioned, "")}},
	}}
	d, _ := provisioningDaemon(t, a)
	msgs, err := runProvisioning(t, d)
	if err != nil {
		t.Fatalf("waitForProvisioning: %v", err)
	}
	if n := <-a.calls; n != 3 {
		t.Errorf("%d streams opened, want 3", n)
	}
	want := firstEvent + "|provisioning: updating package lists|provisioning: installing packages"
	if got := strings.Join(msgs, "|"); got != want {
		t.Errorf("events %q, want %q", got, want)
	}
}

// An agent whose stream keeps breaking (one that cannot send its
// status) still ends the wait once Info reports the marker.
func TestProvisioningBrokenStreamFallsBackToInfo(t *testing.T) {
	var asked atomic.Int32
	a := &provisioningAgent{
		streams: []provisioningScript{{err: errors.New("encode the reply: json: unsupported value")}},
		info:    func() *agentcall.Info { return &agentcall.Info{Provisioned: asked.Add(1) >= 2} },
	}
	d, _ := provisioningDaemon(t, a)
	msgs, err := runProvisioning(t, d)
	if err != nil {
		t.Fatalf("waitForProvisioning: %v", err)
	}
	if n := <-a.calls; n != 2 || asked.Load() != 2 {
		t.Errorf("%d streams opened, Info asked %d times; want 2 and 2", n, asked.Load())
	}
	if len(msgs) != 1 {
		t.Errorf("events: %q", msgs)
	}
}

// The guest is hostile: whatever it sends, hostd keeps a short line of
// printable text, and relays no escape sequence and no line break that
// could fake output in the user's terminal.
func TestProvisioningHostileStringsAreBounded(t *testing.T) {
	escape := "\x1b]52;c;ZWNobyBwd25lZA==\x07\x1b[2J\r\n[  0.1s] ready\n\u202e"
	huge := strings.Repeat("A", 15<<10) // three fit in a line of agentcall.MaxLine
	d, _ := provisioningDaemon(t, &provisioningAgent{streams: []provisioningScript{{send: []*agentcall.ProvisioningStatus{
		provRunning(escape+huge, escape+huge, escape+huge),
		provRunning("\u0085\u009b"+escape, "", huge+escape),
		provEnded(agentcall.StateFailed, escape+huge),
	}}}})
	msgs, err := runProvisioning(t, d)
	if err == nil {
		t.Fatal("a failed provisioning succeeded")
	}
	// "provisioning: " + step (60) + ": " + line (120), and the error's
	// wording + line (120).
	for _, s := range append(msgs[1:], err.Error()) {
		if len(s) > 200 {
			t.Errorf("%d bytes relayed: %.40q...", len(s), s)
		}
		if !termsafe.Safe(s, false) || strings.ContainsAny(s, "\x1b\x07\r\n\u202e") {
			t.Errorf("unsafe text relayed: %q", s)
		}
	}
	if len(msgs) != 3 {
		t.Errorf("events: %q", msgs)
	}
}

// An agent older than the Provisioning call is asked Info until it
// reports the guest provisioned, and the user is told why there is no
// progress to show.
func TestProvisioningOlderAgentFallsBackToInfo(t *testing.T) {
	var asked atomic.Int32
	d, _ := provisioningDaemon(t, &provisioningAgent{info: func() *agentcall.Info {
		return &agentcall.Info{Provisioned: asked.Add(1) >= 2}
	}})
	msgs, err := runProvisioning(t, d)
	if err != nil {
		t.Fatalf("waitForProvisioning: %v", err)
	}
	if len(msgs) != 2 || !strings.Contains(msgs[1], "agent (version 0.9.0) does not report provisioning progress") {
		t.Errorf("events: %q", msgs)
	}
	if n := asked.Load(); n != 2 {
		t.Errorf("Info asked %d times, want 2", n)
	}
	if _, err := os.Stat(d.paths.Provisioned()); err != nil {
		t.Errorf("provisioning not recorded: %v", err)
	}
}

// A VM that stops while the stream waits ends the wait with the VM's
// story, not a hang.
func TestProvisioningVMGone(t *testing.T) {
	d, vm := provisioningDaemon(t, &provisioningAgent{streams: []provisioningScript{{send: []*agentcall.ProvisioningStatus{provRunning("", "init", "")}, block: true}}})
	go func() {
		for len(d.provisioningEvents()) < 2 {
			time.Sleep(time.Millisecond)
		}
		close(vm.stop)
	}()
	_, err := runProvisioning(t, d)
	if err == nil || err.Error() != "the VM stopped while booting" {
		t.Errorf("VM gone: %v", err)
	}
}

func (d *Daemon) provisioningEvents() []*controlwire.Event {
	past, _, stop := d.events.subscribe()
	stop()
	return past
}

// A guest whose agent answers before its boot script wrote the marker
// (the agent starts early) is asked again: once it reports provisioned,
// hostd records it, with no provisioning event and no stream.
func TestProvisioningSettlesWhileTheBootEnds(t *testing.T) {
	var infos atomic.Int32
	d, _ := provisioningDaemon(t, &provisioningAgent{ // no streams: one opened would emit an event
		info: func() *agentcall.Info {
			return &agentcall.Info{Provisioned: infos.Add(1) >= 3}
		},
	})
	d.settleFor = time.Hour
	msgs, err := runProvisioning(t, d)
	if err != nil || len(msgs) != 0 {
		t.Errorf("settling: err %v, events %q", err, msgs)
	}
	if n := infos.Load(); n != 3 {
		t.Errorf("Info asked %d times, want 3", n)
	}
	if _, err := os.Stat(d.paths.Provisioned()); err != nil {
		t.Errorf("provisioning not recorded: %v", err)
	}
}

// A guest still not provisioned when the settling ends is provisioning:
// hostd says so and follows it.
func TestProvisioningAfterSettling(t *testing.T) {
	d, _ := provisioningDaemon(t, &provisioningAgent{streams: []provisioningScript{{send: []*agentcall.ProvisioningStatus{
		provEnded(agentcall.StateProvisioned, ""),
	}}}})
	d.settleFor = time.Nanosecond
	msgs, err := runProvisioning(t, d)
	if err != nil || len(msgs) != 1 || msgs[0] != firstEvent {
		t.Errorf("after settling: err %v, events %q", err, msgs)
	}
}
