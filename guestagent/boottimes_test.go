package guestagent

import (
	"runtime"
	"testing"
)

func TestParseStartTime(t *testing.T) {
	// Fields 3..21 then starttime (22) = 4242; the name holds ") (" and
	// spaces, as a hostile or odd process name may.
	line := "1 (a) (b c) S 0 1 1 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 1 0 4242 1000 10 18446744073709551615\n"
	if got := parseStartTime([]byte(line)); got != 4242 {
		t.Errorf("starttime %d, want 4242", got)
	}
	for _, bad := range []string{"", "1 (x S 0", "1 (x) S 0 1", "1 (x) S 0 1 1 0 -1 0 0 0 0 0 0 0 0 0 0 0 1 0 -5 1",
		"1 (x) S 0 1 1 0 -1 0 0 0 0 0 0 0 0 0 0 0 1 0 99999999999999999999 1"} {
		if got := parseStartTime([]byte(bad)); got != 0 {
			t.Errorf("%q: starttime %d, want 0", bad, got)
		}
	}
}

// Info reports the boot times a Linux guest reads itself: init first,
// then this process, then its listening, none after now.
func TestInfoReportsBootTimes(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("boot times are read from Linux's /proc")
	}
	MarkListening()
	info := New(Options{}).info()
	init, started, listening, now := info.InitStartedMs, info.AgentStartedMs, info.AgentListeningMs, info.UptimeMs
	if init <= 0 || started < init || listening < started || now < listening {
		t.Errorf("init %d, agent started %d, listening %d, uptime %d: want 0 < each <= the next", init, started, listening, now)
	}
}

func TestParseRunInit(t *testing.T) {
	klog := "<6>[    0.000000] Booting Linux\n<6>[    4.123456] Run /init as init process\n<6>[    9.000000] Run /sbin/init as init process\n"
	if got := parseRunInit([]byte(klog)); got != 4123 {
		t.Errorf("got %d, want 4123", got)
	}
	for _, bad := range []string{"", "<6>[    4.1] Run /init as init\n", "<6>[   -4.123456] Run /init as init process\n",
		"<6>    4.123456] Run /init as init process\n", "<6>[ 99999999999999999999.0] Run /init as init process\n"} {
		if got := parseRunInit([]byte(bad)); got != 0 {
			t.Errorf("%q: got %d, want 0", bad, got)
		}
	}
}
