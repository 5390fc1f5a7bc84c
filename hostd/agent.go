package hostd

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"strings"
	"time"

	"github.com/coworkhq/cowork/hostd/agentrpc"
	"github.com/coworkhq/cowork/hostd/controlwire"
	"github.com/coworkhq/cowork/hostd/netstack"
	"github.com/coworkhq/cowork/hostd/netstack/splice"
	"github.com/coworkhq/cowork/internal/acceptloop"
	"github.com/coworkhq/cowork/internal/agentcall"
	"github.com/coworkhq/cowork/internal/buildinfo"
	"github.com/coworkhq/cowork/internal/termsafe"
)

// waitForAgent polls the agent until it answers Info, then follows
// provisioning until the guest says it is complete.
func (d *Daemon) waitForAgent(ctx context.Context) error {
	client, err := agentrpc.New(func(ctx context.Context) (net.Conn, error) { return d.vm.DialAgent(ctx) })
	if err != nil {
		return err
	}
	for {
		actx, cancel := context.WithTimeout(ctx, 3*time.Second)
		info, err := client.Info(actx)
		cancel()
		if err == nil {
			boot := guestBootFrom(info, time.Since(d.started))
			d.mu.Lock()
			d.agent, d.info = client, agentInfo{version: info.Version, bootID: info.BootID, boot: boot}
			n := d.net
			d.mu.Unlock()
			if n != nil {
				n.SetOwners(ownerSource(n, client))
			}
			logGuestBoot(d.log, boot)
			msg := "agent connected (version " + info.Version + ")"
			if info.Version != buildinfo.Version {
				msg += fmt.Sprintf("; this cowork is %s, so the guest runs an older or newer agent", buildinfo.Version)
			}
			d.events.emit(controlwire.PhaseAgentConnected, msg, nil)
			d.clockSet = d.syncClockBeside(ctx)
			return d.waitForProvisioning(ctx, info.Provisioned)
		}
		select {
		case <-d.vm.Done():
			return d.vmGone()
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(agentPoll):
		}
	}
}

// ownerSource asks the agent who holds guest sockets, for the audit
// log's provenance; an agent of an older build, which does not know the
// call, is not asked again.
func ownerSource(n *netstack.Stack, client *agentrpc.Client) netstack.OwnerSource {
	return func(ctx context.Context, socks []agentcall.Socket) ([]agentcall.SocketOwner, error) {
		owners, err := client.SocketOwners(ctx, socks)
		if agentrpc.IsUnimplemented(err) {
			n.SetOwners(nil)
		}
		return owners, err
	}
}

// agentPoll is how soon hostd asks again after the agent did not answer:
// a resumed guest's agent answers within a few tens of milliseconds of
// its port reopening, and every poll of the wait is part of a resume.
const agentPoll = 50 * time.Millisecond

// provisionError is a guest whose provisioning failed: it runs, and its
// agent answers, but it lacks what provisioning should have installed.
type provisionError struct{ detail string }

func (e *provisionError) Error() string { return "provisioning failed: " + e.detail }

// waitForProvisioning follows the guest's provisioning until the guest
// reports itself provisioned, relaying what it is doing as events, and
// records the fact in the instance directory (init resumes an instance
// without it).
func (d *Daemon) waitForProvisioning(ctx context.Context, done bool) error {
	if !done {
		var err error
		if done, err = d.settle(ctx); err != nil {
			return err
		}
	}
	if !done {
		d.events.emit(controlwire.PhaseProvisioning, "provisioning the guest (first boot: installing the toolchain and Claude Code)", nil)
		if err := d.followProvisioning(ctx); err != nil {
			return err
		}
	}
	if err := os.WriteFile(d.paths.Provisioned(), []byte(time.Now().UTC().Format(time.RFC3339)+"\n"), 0o600); err != nil {
		d.log.Warn("record provisioning as complete", "err", err)
	}
	return nil
}

// bootSettle is how long hostd keeps asking a guest that was not
// provisioned when its agent first answered before it follows the
// guest's provisioning. An agent that starts early in the boot (the e2e
// guest's starts beside its boot script, which writes the marker once
// the network and the share are up) answers moments before the marker
// is there; a first boot's provisioning takes minutes, and only its
// first event comes this much later.
const bootSettle = 5 * time.Second

// settlePoll is how often hostd asks meanwhile: an Info is cheap, and
// each poll that misses the marker delays "ready" by up to this much.
const settlePoll = 50 * time.Millisecond

// settle asks the agent's Info, for up to d.settleFor, whether the guest
// is provisioned by now.
func (d *Daemon) settle(ctx context.Context) (bool, error) {
	deadline := time.Now().Add(d.settleFor)
	for time.Now().Before(deadline) {
		if err := d.pause(ctx, settlePoll); err != nil {
			return false, err
		}
		if d.agentSaysProvisioned(ctx) {
			return true, nil
		}
	}
	return false, nil
}

// provisionRetry is how long hostd waits before it opens a Provisioning
// stream again, or asks an older agent's Info again.
const provisionRetry = 2 * time.Second

// followProvisioning relays the agent's Provisioning stream (the agent
// reads cloud-init's and the provisioning unit's state in the guest)
// until it reports the guest provisioned. A stream that breaks off, as
// when the agent restarts (its unit restarts it when the boot script
// installed a new one), is opened again, unless Info says the guest is
// provisioned by then. An agent without the call is asked Info instead
// (pollProvisioned).
func (d *Daemon) followProvisioning(ctx context.Context) error {
	// The stream ends with the VM: its channel may not say so for a while.
	sctx, cancel := context.WithCancel(ctx)
	defer cancel()
	go func() {
		select {
		case <-d.vm.Done():
			cancel()
		case <-sctx.Done():
		}
	}()
	last := ""
	for {
		err := d.relayProvisioning(sctx, &last)
		var perr *provisionError
		switch {
		case err == nil, errors.As(err, &perr):
			return err
		case agentrpc.IsUnimplemented(err):
			return d.pollProvisioned(ctx)
		}
		d.log.Debug("provisioning stream broke off; opening it again", "err", err)
		if err := d.pause(ctx, provisionRetry); err != nil {
			return err
		}
		// A stream that keeps breaking (an agent that cannot send its
		// status) must not hide a guest that is provisioned.
		if d.agentSaysProvisioned(ctx) {
			return nil
		}
	}
}

// agentSaysProvisioned is whether the agent's Info reports the marker.
func (d *Daemon) agentSaysProvisioned(ctx context.Context) bool {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	info, err := d.agent.Info(ctx)
	return err == nil && info.Provisioned
}

// relayProvisioning follows one Provisioning stream: it emits each new
// message, returns nil once the guest is provisioned and a
// provisionError when provisioning ended without that. Any other error
// is a stream that broke off, io.EOF one that ended without a verdict.
func (d *Daemon) relayProvisioning(ctx context.Context, last *string) error {
	stream, err := d.agent.Provisioning(ctx)
	if err != nil {
		return err
	}
	defer stream.Close()
	for {
		st, err := stream.Recv()
		if err != nil {
			return err
		}
		p := guestProvisionState(st)
		switch st.State {
		case agentcall.StateProvisioned:
			return nil
		case agentcall.StateFailed:
			return &provisionError{detail: "the provisioning script failed; last output: " + p.line}
		case agentcall.StateFinishedUnprovisioned:
			return &provisionError{detail: "cloud-init finished without marking the guest provisioned; last output: " + p.line}
		}
		if msg := p.message(); msg != "" && msg != *last {
			*last = msg
			d.events.emit(controlwire.PhaseProvisioning, "provisioning: "+msg, nil)
		}
	}
}

// pollProvisioned waits for an agent that lacks the Provisioning call to
// report the guest provisioned in Info. Only an agent older than this
// hostd lacks it (the boot script installs the host's agent; a guest
// whose cidata disk is gone keeps the one it has), so hostd waits as the
// older hostd did, without progress or a failure verdict; the client's
// timeout ends a wait that does not end.
func (d *Daemon) pollProvisioned(ctx context.Context) error {
	d.mu.Lock()
	version := d.info.version
	d.mu.Unlock()
	d.events.emit(controlwire.PhaseProvisioning, "the guest's agent (version "+guestLine(version, 64)+") does not report provisioning progress; waiting for it to report the guest provisioned", nil)
	for {
		if err := d.pause(ctx, provisionRetry); err != nil {
			return err
		}
		if d.agentSaysProvisioned(ctx) {
			return nil
		}
	}
}

// pause waits for dur; it returns why it could not (the VM stopped, or
// ctx ended) instead.
func (d *Daemon) pause(ctx context.Context, dur time.Duration) error {
	select {
	case <-d.vm.Done():
		return d.vmGone()
	case <-ctx.Done():
		return ctx.Err()
	case <-time.After(dur):
		return nil
	}
}

// provisionState is one look at the guest's provisioning, as hostd
// shows it.
type provisionState struct {
	step, stage, line string
}

// guestProvisionState takes what the agent sent as hostile: each string
// becomes one printable line (termsafe) cut to a width the live view can
// show, whatever size the guest sent.
func guestProvisionState(st *agentcall.ProvisioningStatus) provisionState {
	return provisionState{
		step:  guestLine(st.Step, 60),
		stage: guestLine(st.Stage, 40),
		line:  guestLine(st.LastLine, 120),
	}
}

// guestLine makes s, from the guest, a printable line of at most n bytes.
func guestLine(s string, n int) string {
	if len(s) > 4*n {
		s = s[:4*n] // bound the work; a rune cut here prints as U+FFFD
	}
	return clip(strings.TrimSpace(termsafe.Line(s)), n)
}

// message is what the live view shows: "stage: line", the stage being
// the provisioning script's step, or else cloud-init's stage.
func (p provisionState) message() string {
	stage := p.step
	if stage == "" && p.stage != "" {
		stage = "cloud-init " + p.stage
	}
	switch {
	case stage == "":
		return p.line
	case p.line == "":
		return stage
	}
	return stage + ": " + p.line
}

func (d *Daemon) vmGone() error {
	if err := d.vm.Err(); err != nil {
		return err
	}
	return errors.New("the VM stopped while booting")
}

// watchKernel reports the kernel phase when the console shows its first
// byte, unless the agent answered first (a quiet console).
func (d *Daemon) watchKernel(ctx context.Context) {
	for {
		select {
		case <-d.console.Started():
			if d.events.last() < controlwire.PhaseAgentConnected {
				d.events.emit(controlwire.PhaseKernel, "guest kernel booting", nil)
			}
			return
		case <-ctx.Done():
			return
		case <-d.vm.Done():
			return
		case <-time.After(100 * time.Millisecond):
		}
		if d.events.last() >= controlwire.PhaseAgentConnected {
			return // a quiet console; the agent is up anyway
		}
	}
}

// relay serves agent.sock: each connection gets a new channel to the
// agent, spliced both ways until either side ends. A failing Accept (out
// of descriptors) is retried, so that the socket serves again once the
// pressure is gone; only closing it ends the loop.
func (d *Daemon) relay(ctx context.Context, l net.Listener) {
	go func() {
		<-ctx.Done()
		l.Close()
	}()
	err := acceptloop.Serve(l, func(c net.Conn) {
		defer c.Close()
		dctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		g, err := d.vm.DialAgent(dctx)
		cancel()
		if err != nil {
			d.log.Warn("relay: open an agent channel", "err", err)
			return
		}
		defer g.Close()
		// Both ends close when either side leaves: the guest must not
		// hold a host connection after the client went.
		splice.Join(c, g, splice.Options{CloseOnEnd: true})
	}, acceptLog(d.log, "agent.sock"))
	if err != nil {
		d.log.Error("agent.sock stopped serving", "err", err)
	}
}

// acceptLog reports an accept loop's bad spells: its first failure, and
// its recovery.
func acceptLog(log *slog.Logger, what string) func(error, int) {
	return func(err error, failures int) {
		if err != nil {
			log.Warn(what+": accept failed; retrying with backoff", "err", err)
		} else {
			log.Info(what+": accepting again", "failed_accepts", failures)
		}
	}
}

// watchClock keeps the guest's clock on the host's. Every few seconds it
// sets it at once when the host's wall clock jumped (the host slept, or its
// time was set: the wall clock moved unlike the monotonic one), and else
// when the guest's clock is more than maxSkew off the host's, whatever
// moved it (a guest without NTP under an allowlist policy drifts too).
func (d *Daemon) watchClock(ctx context.Context) {
	const every = 5 * time.Second
	last := time.Now()
	for {
		select {
		case <-ctx.Done():
			return
		case <-d.vm.Done():
			return
		case <-time.After(every):
		}
		now := time.Now()
		wall := now.Round(0).Sub(last.Round(0))
		mono := now.Sub(last)
		last = now
		if drift := wall - mono; drift > maxSkew || drift < -maxSkew {
			d.log.Info("host clock jumped; setting the guest clock", "drift", drift.Round(time.Millisecond))
			d.syncClock(ctx)
			continue
		}
		if skew, ok := d.guestSkew(ctx); ok && (skew > maxSkew || skew < -maxSkew) {
			d.log.Info("guest clock drifted; setting it", "skew", skew.Round(time.Millisecond))
			d.syncClock(ctx)
		}
	}
}

// maxSkew is how far the guest's clock may be off before hostd sets it.
const maxSkew = 2 * time.Second

// guestSkew is how far the guest's clock is ahead of the host's, measured
// at the middle of an Info round trip.
func (d *Daemon) guestSkew(ctx context.Context) (time.Duration, bool) {
	d.mu.Lock()
	agent := d.agent
	d.mu.Unlock()
	if agent == nil {
		return 0, false
	}
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	sent := time.Now()
	info, err := agent.Info(ctx)
	if err != nil || info.TimeUnixNano == 0 {
		return 0, false
	}
	mid := sent.Add(time.Since(sent) / 2)
	return time.Unix(0, info.TimeUnixNano).Sub(mid), true
}

// syncClockBeside sets the guest's clock while the boot goes on (a
// resumed guest's clock is behind by as long as it was suspended, and its
// share is mounted meanwhile); the channel closes once it is set, which
// the instance waits for before it is ready.
func (d *Daemon) syncClockBeside(ctx context.Context) <-chan struct{} {
	done := make(chan struct{})
	go func() {
		defer close(done)
		d.syncClock(ctx)
	}()
	return done
}

// awaitClock waits for the clock set syncClockBeside began, if any.
func (d *Daemon) awaitClock(ctx context.Context) {
	if d.clockSet == nil {
		return
	}
	select {
	case <-d.clockSet:
	case <-ctx.Done():
	}
}

func (d *Daemon) syncClock(ctx context.Context) {
	d.mu.Lock()
	agent := d.agent
	d.mu.Unlock()
	if agent == nil {
		return
	}
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	skew, err := agent.SetTime(ctx, time.Now())
	if err != nil {
		d.log.Warn("set guest clock", "err", err)
		return
	}
	if skew > time.Second || skew < -time.Second {
		d.log.Info("guest clock corrected", "was_off_by", skew.Round(time.Millisecond))
	}
}
