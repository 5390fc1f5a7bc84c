package progress

import (
	"bytes"
	"strings"
	"testing"
	"time"

	"github.com/coworkhq/cowork/cmd/cowork/iostreams"
)

const mib = 1 << 20

// plain makes a bar writing to a buffer (not a terminal) on a clock the
// test moves.
func plain(t *testing.T) (*Bar, *bytes.Buffer, *time.Time) {
	t.Helper()
	ios, _, _, errOut := iostreams.Test()
	b := New(ios, "download")
	clock := b.began
	b.now = func() time.Time { return clock }
	return b, errOut, &clock
}

func TestPlainLinesHaveRateAndETA(t *testing.T) {
	b, out, clock := plain(t)
	b.Update(0, 100*mib)
	*clock = clock.Add(time.Second)
	b.Update(10*mib, 100*mib)
	b.Update(10*mib+512*1024, 100*mib) // the same tenth: no line
	*clock = clock.Add(9 * time.Second)
	b.Update(100*mib, 100*mib)
	b.Done()
	want := "  download: 0 B of 100 MiB (0%)\n" +
		"  download: 10 MiB of 100 MiB (10%), 10 MiB/s, ETA 9s\n" +
		"  download: 100 MiB of 100 MiB (100%), 10 MiB/s\n" +
		"  download  done (10s)\n"
	if out.String() != want {
		t.Errorf("got:\n%s\nwant:\n%s", out, want)
	}
}

// A resumed download's rate and time left count only what this run moved.
func TestPlainResumedRate(t *testing.T) {
	b, out, clock := plain(t)
	b.Update(50*mib, 100*mib)
	*clock = clock.Add(2 * time.Second)
	b.Update(60*mib, 100*mib)
	if !strings.HasSuffix(out.String(), "  download: 60 MiB of 100 MiB (60%), 5 MiB/s, ETA 8s\n") {
		t.Errorf("got:\n%s", out)
	}
}

func TestPlainUnknownSize(t *testing.T) {
	b, out, clock := plain(t)
	b.Update(0, 0)
	*clock = clock.Add(10 * time.Second)
	b.Update(20*mib, 0)
	*clock = clock.Add(5 * time.Second)
	b.Update(30*mib, 0) // within 10 s of the last line
	*clock = clock.Add(5 * time.Second)
	b.Update(40*mib, 0)
	want := "  download: 0 B\n  download: 20 MiB, 2 MiB/s\n  download: 40 MiB, 2 MiB/s\n"
	if out.String() != want {
		t.Errorf("got:\n%s\nwant:\n%s", out, want)
	}
}

// Off a terminal, and with NO_COLOR, nothing but plain text.
func TestPlainHasNoEscapes(t *testing.T) {
	t.Setenv("NO_COLOR", "1")
	b, out, clock := plain(t)
	for i := int64(0); i <= 10; i++ {
		*clock = clock.Add(time.Second)
		b.Update(i*mib, 10*mib)
	}
	b.Done()
	if strings.ContainsAny(out.String(), "\x1b\r") {
		t.Errorf("escape codes or carriage returns off a terminal: %q", out)
	}
	if n := strings.Count(out.String(), "\n"); n != 12 {
		t.Errorf("%d lines, want one a tenth and done:\n%s", n, out)
	}
}

// A late report from a slower goroutine, and reports after Done, draw nothing.
func TestStaleAndLateReports(t *testing.T) {
	b, out, clock := plain(t)
	*clock = clock.Add(time.Second)
	b.Update(50*mib, 100*mib)
	b.Update(5*mib, 100*mib)
	b.Done()
	b.Update(100*mib, 100*mib)
	if n := strings.Count(out.String(), "\n"); n != 2 {
		t.Errorf("got:\n%s", out)
	}
}

// On a terminal one line is redrawn in place, at most every redraw and
// at the end, and cleared when the step is done.
func TestTerminalBar(t *testing.T) {
	var out bytes.Buffer
	clock := time.Now()
	b := &Bar{label: "convert", out: &out, tty: true, began: clock, lastTenth: -1, now: func() time.Time { return clock }}
	clock = clock.Add(time.Second)
	b.Update(mib, 4*mib)
	clock = clock.Add(redraw / 2)
	b.Update(2*mib, 4*mib) // too soon: not drawn
	b.Update(4*mib, 4*mib) // the end: drawn
	b.Done()
	bar := "[" + strings.Repeat("=", barWidth/4) + strings.Repeat(" ", barWidth-barWidth/4) + "]"
	want := "\r\x1b[K  convert   " + bar + " 1 MiB of 4 MiB (25%)" +
		"\r\x1b[K  convert   [" + strings.Repeat("=", barWidth) + "] 4 MiB of 4 MiB (100%), 2.9 MiB/s" +
		"\r\x1b[K  convert   done (1.1s)\n"
	if out.String() != want {
		t.Errorf("got  %q\nwant %q", out.String(), want)
	}
}
