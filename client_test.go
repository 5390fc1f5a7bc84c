package cowork

import (
	"fmt"
	"os"
	"strings"
	"testing"

	"github.com/coworkhq/cowork/internal/termsafe/termsafetest"
)

func TestDiagnosticsShowsTheEndOfBothLogs(t *testing.T) {
	p := newInstance(t)
	if d := Diagnostics(p); d != "" {
		t.Fatalf("without logs: %q, want nothing", d)
	}
	var serial strings.Builder
	for i := 1; i <= 25; i++ {
		fmt.Fprintf(&serial, "serial %d\n", i)
	}
	os.WriteFile(p.SerialLog(), []byte(serial.String()), 0o600)
	os.WriteFile(p.HostdLog(), []byte("level=ERROR msg=\"boot failed\"\n"), 0o600)

	d := Diagnostics(p)
	serialAt := strings.Index(d, "--- last lines of serial.log ("+p.SerialLog()+") ---\n")
	hostdAt := strings.Index(d, "--- last lines of hostd.log ("+p.HostdLog()+") ---\n")
	if serialAt < 0 || hostdAt < serialAt {
		t.Fatalf("headers missing or out of order:\n%s", d)
	}
	for i := 16; i <= 25; i++ {
		if !strings.Contains(d, fmt.Sprintf("serial %d\n", i)) {
			t.Errorf("serial line %d (of the last 10) is missing:\n%s", i, d)
		}
	}
	if strings.Contains(d, "serial 15\n") {
		t.Errorf("more than the last 10 serial lines:\n%s", d)
	}
	if !strings.HasSuffix(d, "level=ERROR msg=\"boot failed\"") {
		t.Errorf("hostd.log's last line is not at the end:\n%s", d)
	}
	if !strings.HasPrefix(d, "\n") {
		t.Errorf("the diagnostics do not start on a line of their own: %q", d)
	}
}

// The console's end is the guest's text: it comes back inert, and only the
// end of a huge log is read.
func TestDiagnosticsShowsGuestTextInert(t *testing.T) {
	p := newInstance(t)
	big := strings.Repeat("filler line\n", 1<<20/12*8) // 8 MiB
	os.WriteFile(p.SerialLog(), []byte(big+"[ 1.0] "+termsafetest.Attack+"\r\n[ 2.0] last\r\n"), 0o600)
	d := Diagnostics(p)
	termsafetest.Check(t, "diagnostics", d, true)
	if !strings.Contains(d, "[ 1.0] evil␛[2J") || !strings.HasSuffix(d, "[ 2.0] last") {
		t.Errorf("the console's last lines are missing: %q", d)
	}
}
