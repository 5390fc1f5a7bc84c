package lograte

import (
	"bytes"
	"fmt"
	"log/slog"
	"strings"
	"testing"
	"time"
)

// clock is a fake time the test moves.
type clock struct{ t time.Time }

func (c *clock) now() time.Time { return c.t }

func newTest(burst int, every time.Duration) (*slog.Logger, *bytes.Buffer, *clock) {
	var buf bytes.Buffer
	h := New(slog.NewTextHandler(&buf, nil), burst, every)
	c := &clock{t: time.Unix(1e9, 0)}
	h.s.now = c.now
	return slog.New(h), &buf, c
}

func lines(b *bytes.Buffer) []string {
	s := strings.TrimSpace(b.String())
	if s == "" {
		return nil
	}
	return strings.Split(s, "\n")
}

// A flood of one message passes its burst, then one line an interval,
// which says how many were held back.
func TestAFloodIsLimited(t *testing.T) {
	log, buf, c := newTest(5, 10*time.Second)
	for i := range 100000 {
		log.Warn("yamux", "said", fmt.Sprintf("keepalive failed %d", i))
	}
	if got := len(lines(buf)); got != 5 {
		t.Fatalf("%d lines passed at once, want the burst of 5", got)
	}
	c.t = c.t.Add(10 * time.Second)
	log.Warn("yamux", "said", "again")
	got := lines(buf)
	if len(got) != 6 || !strings.Contains(got[5], "suppressed=99995") {
		t.Errorf("the line after the interval: %q", got[len(got)-1])
	}
	// An hour of flooding, a line every millisecond: one line per interval.
	buf.Reset()
	for range 3600 * 1000 / 10 {
		c.t = c.t.Add(10 * time.Millisecond)
		log.Warn("yamux")
	}
	if n := len(lines(buf)); n < 359 || n > 361 {
		t.Errorf("an hour of flooding wrote %d lines, want about 360", n)
	}
}

// Messages are limited apart: one flooding does not silence another.
func TestMessagesAreLimitedApart(t *testing.T) {
	log, buf, _ := newTest(3, time.Minute)
	for range 1000 {
		log.Warn("flood")
	}
	log.Info("stopping")
	got := lines(buf)
	if len(got) != 4 || !strings.Contains(got[3], "msg=stopping") {
		t.Errorf("lines: %q", got)
	}
}

// Messages made unique cannot grow the table past maxKeys nor escape the
// limit: past it they share one.
func TestUniqueMessagesShareALimit(t *testing.T) {
	log, buf, _ := newTest(2, time.Minute)
	h := log.Handler().(*Handler)
	for i := range 100000 {
		log.Warn(fmt.Sprintf("guest said %d", i))
	}
	if n := len(h.s.keys); n > maxKeys+1 {
		t.Errorf("%d keys tracked", n)
	}
	if n := len(lines(buf)); n > 2*maxKeys+2 {
		t.Errorf("%d lines passed", n)
	}
}

// Once the flood of unique messages is over, a new message gets a limit
// of its own again: a flood cannot silence what comes after it.
func TestQuietMessagesMakeRoom(t *testing.T) {
	log, buf, c := newTest(2, time.Second)
	for i := range 10 * maxKeys {
		log.Warn(fmt.Sprintf("guest said %d", i))
	}
	c.t = c.t.Add(time.Minute)
	buf.Reset()
	for range 3 {
		log.Error("vm stopped")
	}
	if n := strings.Count(buf.String(), "msg=\"vm stopped\""); n != 2 {
		t.Errorf("a new message after the flood passed %d times, want its burst of 2:\n%s", n, buf)
	}
	// While the flood goes on, it does share the overflow's limit.
	log2, buf2, _ := newTest(2, time.Hour)
	for i := range 10 * maxKeys {
		log2.Warn(fmt.Sprintf("guest said %d", i))
	}
	buf2.Reset()
	log2.Error("vm stopped")
	if buf2.Len() != 0 {
		t.Errorf("a new message skipped the overflow limit during a flood: %s", buf2)
	}
}

// A logger's children (With) count against the same limits.
func TestChildrenShareTheLimits(t *testing.T) {
	log, buf, _ := newTest(2, time.Minute)
	for i := range 100 {
		log.With("session", i).Warn("relay answer cut short")
	}
	if n := len(lines(buf)); n != 2 {
		t.Errorf("%d lines through children, want 2", n)
	}
	if !strings.Contains(buf.String(), "session=0") {
		t.Errorf("the child's attributes are lost: %s", buf)
	}
}

func TestLevelsAreTheWrappedHandlers(t *testing.T) {
	var buf bytes.Buffer
	log := Logger(slog.New(slog.NewTextHandler(&buf, &slog.HandlerOptions{Level: slog.LevelWarn})))
	log.Info("hidden")
	log.Warn("shown")
	if got := buf.String(); strings.Contains(got, "hidden") || !strings.Contains(got, "shown") {
		t.Errorf("got %q", got)
	}
}
