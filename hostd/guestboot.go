package hostd

import (
	"log/slog"
	"time"

	"github.com/coworkhq/cowork/hostd/controlwire"
	"github.com/coworkhq/cowork/internal/agentcall"
)

// GuestBoot is where the guest's last boot spent its time, from the VM's
// start to its agent's first answer. AgentAnswered is the host's own
// measure; the rest are the guest's claims (its Info), offsets from the
// guest kernel's start, kept only when they are in bounds (see
// guestBootFrom); zero means unknown or dropped.
type GuestBoot struct {
	AgentAnswered  time.Duration // host: VM started → the agent's first Info answer
	Uptime         time.Duration // guest: kernel start → that answer
	InitStarted    time.Duration // guest: kernel start → PID 1 made (the kernel's own init)
	Userspace      time.Duration // guest: kernel start → user space started (/init)
	AgentStarted   time.Duration // guest: kernel start → agent process started
	AgentListening time.Duration // guest: kernel start → agent listening
}

// bootSlack is how far the guest's uptime may run ahead of the host's
// measure of the VM's life (the VM's start is taken when QEMU is up, and
// the two clocks tick apart a little).
const bootSlack = time.Second

// guestBootFrom takes the guest's boot times from its first Info answer,
// which came answered after the VM had run for answered. The guest is
// hostile: its uptime must lie within the VM's life, each time within
// its uptime and after the one before it; anything else is dropped, so
// that no raw guest number reaches a log or the status.
func guestBootFrom(info *agentcall.Info, answered time.Duration) GuestBoot {
	b := GuestBoot{AgentAnswered: answered}
	limit := (answered + bootSlack).Milliseconds()
	up := info.UptimeMs
	if up <= 0 || up > limit {
		return b
	}
	b.Uptime = time.Duration(up) * time.Millisecond
	prev := int64(0)
	keep := func(ms int64) time.Duration {
		if ms <= 0 || ms > up || ms < prev {
			return 0
		}
		prev = ms
		return time.Duration(ms) * time.Millisecond
	}
	b.InitStarted = keep(info.InitStartedMs)
	b.Userspace = keep(info.UserspaceStartedMs)
	b.AgentStarted = keep(info.AgentStartedMs)
	b.AgentListening = keep(info.AgentListeningMs)
	return b
}

// logAttrs are the phases one log line shows, each a duration between
// two known points (one that is unknown leaves its phases out).
func (b GuestBoot) logAttrs() []any {
	attrs := []any{"vm_to_agent_answer", b.AgentAnswered.Round(time.Millisecond)}
	span := func(name string, from, to time.Duration) {
		if to > 0 && to >= from {
			attrs = append(attrs, name, (to - from).Round(time.Millisecond))
		}
	}
	if b.Uptime > 0 {
		attrs = append(attrs, "vm_to_kernel", (b.AgentAnswered - b.Uptime).Round(time.Millisecond))
	}
	span("kernel_to_init", 0, b.InitStarted)
	if b.InitStarted > 0 {
		span("init_to_userspace", b.InitStarted, b.Userspace)
	}
	if b.Userspace > 0 {
		span("userspace_to_agent_start", b.Userspace, b.AgentStarted)
		span("userspace_to_agent_listening", b.Userspace, b.AgentListening)
	}
	if b.AgentStarted > 0 {
		span("agent_start_to_listening", b.AgentStarted, b.AgentListening)
	}
	if b.AgentListening > 0 {
		span("agent_listening_to_answer", b.AgentListening, b.Uptime)
	}
	return attrs
}

// logGuestBoot writes the boot's phases as one line of hostd.log.
func logGuestBoot(log *slog.Logger, b GuestBoot) {
	log.Info("guest boot phases", b.logAttrs()...)
}

// phases is b as the control API reports it.
func (b GuestBoot) phases() *controlwire.BootPhases {
	return &controlwire.BootPhases{
		AgentAnsweredMs:  b.AgentAnswered.Milliseconds(),
		UptimeMs:         b.Uptime.Milliseconds(),
		UserspaceMs:      b.Userspace.Milliseconds(),
		AgentStartedMs:   b.AgentStarted.Milliseconds(),
		AgentListeningMs: b.AgentListening.Milliseconds(),
	}
}
