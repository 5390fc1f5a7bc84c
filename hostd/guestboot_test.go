package hostd

import (
	"bytes"
	"log/slog"
	"math"
	"strings"
	"testing"
	"time"

	"github.com/coworkhq/cowork/internal/agentcall"
)

func TestGuestBootKeepsSaneClaims(t *testing.T) {
	info := &agentcall.Info{UptimeMs: 6000, InitStartedMs: 50, UserspaceStartedMs: 2500, AgentStartedMs: 2700, AgentListeningMs: 2750}
	got := guestBootFrom(info, 7*time.Second)
	want := GuestBoot{AgentAnswered: 7 * time.Second, Uptime: 6 * time.Second, InitStarted: 50 * time.Millisecond, Userspace: 2500 * time.Millisecond,
		AgentStarted: 2700 * time.Millisecond, AgentListening: 2750 * time.Millisecond}
	if got != want {
		t.Fatalf("got %+v, want %+v", got, want)
	}
	var buf bytes.Buffer
	logGuestBoot(slog.New(slog.NewTextHandler(&buf, nil)), got)
	for _, s := range []string{"vm_to_agent_answer=7s", "vm_to_kernel=1s", "kernel_to_init=50ms", "init_to_userspace=2.45s",
		"userspace_to_agent_start=200ms", "userspace_to_agent_listening=250ms", "agent_start_to_listening=50ms", "agent_listening_to_answer=3.25s"} {
		if !strings.Contains(buf.String(), s) {
			t.Errorf("log line lacks %s: %s", s, buf.String())
		}
	}
}

// The guest is hostile: a time out of bounds (negative, beyond its own
// uptime, before the phase it follows) or an uptime longer than the VM
// has run is dropped, and never reaches the log raw.
func TestGuestBootDropsHostileClaims(t *testing.T) {
	const answered = 7 * time.Second
	for name, tc := range map[string]struct {
		info *agentcall.Info
		want GuestBoot
	}{
		"negative": {&agentcall.Info{UptimeMs: 6000, InitStartedMs: -1, UserspaceStartedMs: -2, AgentStartedMs: -5, AgentListeningMs: math.MinInt64},
			GuestBoot{Uptime: 6 * time.Second}},
		"beyond uptime": {&agentcall.Info{UptimeMs: 6000, InitStartedMs: 6001, UserspaceStartedMs: 7000, AgentStartedMs: math.MaxInt64, AgentListeningMs: 1 << 62},
			GuestBoot{Uptime: 6 * time.Second}},
		"out of order": {&agentcall.Info{UptimeMs: 6000, InitStartedMs: 3000, UserspaceStartedMs: 1000, AgentStartedMs: 2000, AgentListeningMs: 3100},
			GuestBoot{Uptime: 6 * time.Second, InitStarted: 3 * time.Second, AgentListening: 3100 * time.Millisecond}},
		"uptime longer than the VM ran": {&agentcall.Info{UptimeMs: 9000, InitStartedMs: 1000, AgentStartedMs: 1100, AgentListeningMs: 1200},
			GuestBoot{}},
		"huge uptime":     {&agentcall.Info{UptimeMs: math.MaxInt64, InitStartedMs: 1000}, GuestBoot{}},
		"negative uptime": {&agentcall.Info{UptimeMs: -1, InitStartedMs: 1000}, GuestBoot{}},
		"none":            {&agentcall.Info{}, GuestBoot{}},
	} {
		t.Run(name, func(t *testing.T) {
			tc.want.AgentAnswered = answered
			got := guestBootFrom(tc.info, answered)
			if got != tc.want {
				t.Fatalf("got %+v, want %+v", got, tc.want)
			}
			var buf bytes.Buffer
			logGuestBoot(slog.New(slog.NewTextHandler(&buf, nil)), got)
			for _, f := range strings.Fields(buf.String()) {
				k, v, _ := strings.Cut(f, "=")
				if d, err := time.ParseDuration(v); err == nil && (d < 0 || d > answered) {
					t.Errorf("log line shows %s=%s, out of bounds: %s", k, v, buf.String())
				}
			}
		})
	}
}
