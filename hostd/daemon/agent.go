package daemon

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"strings"
	"time"

	"github.com/coworkhq/cowork/hostd/agentclient"
	"github.com/coworkhq/cowork/hostd/controlpb"
	"github.com/coworkhq/cowork/hostd/netstack/splice"
	"github.com/coworkhq/cowork/internal/acceptloop"
	"github.com/coworkhq/cowork/internal/agentwire"
	"github.com/coworkhq/cowork/internal/buildinfo"
)

// waitForAgent polls the agent until it answers Info, then follows
// provisioning until the guest says it is complete.
func (d *Daemon) waitForAgent(ctx context.Context) error {
	client, err := agentclient.New(func(ctx context.Context) (net.Conn, error) { return d.vm.DialAgent(ctx) })
	if err != nil {
		return err
	}
	for {
		actx, cancel := context.WithTimeout(ctx, 3*time.Second)
		info, err := client.Info(actx)
		cancel()
		if err == nil {
			d.mu.Lock()
			d.agent, d.info = client, agentInfo{version: info.Version, bootID: info.BootId}
			d.mu.Unlock()
			msg := "agent connected (version " + info.Version + ")"
			if info.Version != buildinfo.Version {
				msg += fmt.Sprintf("; this cowork is %s, so the guest runs an older or newer agent", buildinfo.Version)
			}
			d.events.emit(controlpb.Phase_AGENT_CONNECTED, msg, nil)
			d.syncClock(ctx)
			return d.waitForProvisioning(ctx, info.Provisioned)
		}
		select {
		case <-d.vm.Done():
			return d.vmGone()
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(200 * time.Millisecond):
		}
	}
}

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
		d.events.emit(controlpb.Phase_PROVISIONING, "provisioning the guest (first boot: installing the toolchain and Claude Code)", nil)
	}
	last := ""
	for !done {
		select {
		case <-d.vm.Done():
			return d.vmGone()
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(2 * time.Second):
		}
		// The guest first: cloud-init reports finished only after the
		// provisioning unit ended, so a marker made by then is seen below.
		p := d.provisionProgress(ctx)
		actx, cancel := context.WithTimeout(ctx, 5*time.Second)
		info, err := d.agent.Info(actx)
		cancel()
		if done = err == nil && info.Provisioned; done {
			break
		}
		switch p.state {
		case "failed":
			return &provisionError{detail: "the provisioning script failed; last output: " + p.line}
		case "finished":
			return &provisionError{detail: "cloud-init finished without marking the guest provisioned; last output: " + p.line}
		}
		if msg := p.message(); msg != "" && msg != last {
			last = msg
			d.events.emit(controlpb.Phase_PROVISIONING, "provisioning: "+msg, nil)
		}
	}
	if err := os.WriteFile(d.paths.Provisioned(), []byte(time.Now().UTC().Format(time.RFC3339)+"\n"), 0o600); err != nil {
		d.log.Warn("record provisioning as complete", "err", err)
	}
	return nil
}

// provisionProbe is a shell script the agent runs as root to report
// provisioning, one item a line: the state (finished once cloud-init's
// final stage wrote boot-finished; failed when the provisioning unit
// failed; else running), the step the provisioning script is at, the
// cloud-init stage running, and the last line of output.
var provisionProbe = `if [ -e /var/lib/cloud/instance/boot-finished ]; then echo finished
elif systemctl is-failed --quiet ` + agentwire.ProvisionUnit + ` 2>/dev/null; then echo failed
else echo running; fi
head -n 1 ` + agentwire.ProvisionStepFile + ` 2>/dev/null || echo
sed -n 's/^ *"stage": "\([^"]*\)".*/\1/p' /run/cloud-init/status.json 2>/dev/null | head -n 1 | grep . || echo
out=$(journalctl -q -u ` + agentwire.ProvisionUnit + ` -b -n 1 -o cat --no-pager 2>/dev/null)
[ -n "$out" ] || out=$(tail -n 1 /var/log/cloud-init-output.log 2>/dev/null)
echo "$out"
`

// provisionState is one look at the guest's provisioning.
type provisionState struct {
	state, step, stage, line string
}

// provisionProgress runs provisionProbe in the guest; a failed look is a
// zero state (running, nothing to show).
func (d *Daemon) provisionProgress(ctx context.Context) provisionState {
	out, err := d.probe(ctx, provisionProbe)
	if err != nil {
		return provisionState{}
	}
	return parseProvisionProbe(out)
}

// maxProbeOutput bounds what hostd keeps of a probe's output: the guest
// runs the probe, and a hostile one can answer with gigabytes.
const maxProbeOutput = 64 << 10

// probe runs a shell script as root in the guest and returns the first
// maxProbeOutput bytes of its output; the rest is read and dropped.
func (d *Daemon) probe(ctx context.Context, script string) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	out := &headWriter{max: maxProbeOutput}
	_, err := d.agent.Exec(ctx, agentclient.ExecOptions{
		Argv: []string{"sh", "-c", script},
		User: "root", Dir: "/", Stdout: out,
	})
	return out.b.String(), err
}

// headWriter keeps the first max bytes written to it and drops the rest,
// without failing the writer.
type headWriter struct {
	b   strings.Builder
	max int
}

func (w *headWriter) Write(p []byte) (int, error) {
	if room := w.max - w.b.Len(); room > 0 {
		w.b.Write(p[:min(len(p), room)])
	}
	return len(p), nil
}

func parseProvisionProbe(out string) provisionState {
	lines := strings.SplitN(out, "\n", 4)
	for len(lines) < 4 {
		lines = append(lines, "")
	}
	clip := func(s string, n int) string {
		s = strings.TrimSpace(s)
		if len(s) > n {
			s = s[:n-3] + "..."
		}
		return s
	}
	last, _, _ := strings.Cut(lines[3], "\n")
	return provisionState{
		state: clip(lines[0], 20),
		step:  clip(lines[1], 60),
		stage: clip(lines[2], 40),
		line:  clip(last, 120),
	}
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
			if d.events.last() < controlpb.Phase_AGENT_CONNECTED {
				d.events.emit(controlpb.Phase_KERNEL, "guest kernel booting", nil)
			}
			return
		case <-ctx.Done():
			return
		case <-d.vm.Done():
			return
		case <-time.After(100 * time.Millisecond):
		}
		if d.events.last() >= controlpb.Phase_AGENT_CONNECTED {
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
