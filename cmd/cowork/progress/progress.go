// Package progress draws how far a long step is on stderr: a bar with
// bytes, rate and time left on a terminal, plain lines otherwise.
//
// It draws the bar itself: the bar library it used links net/http and
// with it TLS and x509, whose package inits every cowork run paid
// (measured with perf on `cowork version`), for one line of text.
package progress

import (
	"fmt"
	"io"
	"strings"
	"sync"
	"time"

	"github.com/coworkhq/cowork/cmd/cowork/iostreams"
	"github.com/coworkhq/cowork/units"
)

// Bar follows one step.
type Bar struct {
	mu    sync.Mutex
	label string
	out   io.Writer
	tty   bool
	began time.Time
	drawn time.Time // the terminal line's last draw; zero: none yet
	// plain output: the last line's time and tenth
	lastLine  time.Time
	lastTenth int64
	max       int64
	done      bool
	// first is the first count reported: a resumed download starts past
	// zero, and only what this run moved makes its rate.
	first   int64
	started bool
	now     func() time.Time
}

// New starts a bar for a step called label.
func New(ios *iostreams.IOStreams, label string) *Bar {
	return &Bar{label: label, out: ios.ErrOut, tty: ios.IsStderrTTY(), began: time.Now(), lastTenth: -1, now: time.Now}
}

// Update reports done of total bytes (total 0 when unknown). It is safe
// from several goroutines.
func (b *Bar) Update(done, total int64) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.done || done < b.max {
		return // a late report from a slower goroutine
	}
	b.max = done
	if !b.started {
		b.started, b.first = true, done
	}
	if b.tty {
		now := b.now()
		if now.Sub(b.drawn) < redraw && !(total > 0 && done >= total) {
			return
		}
		b.drawn = now
		fmt.Fprintf(b.out, "\r\033[K  %-9s %s", b.label, b.figures(done, total, now))
		return
	}
	// Plain lines: every tenth of the way, or every 10 s when the size is unknown.
	now := b.now()
	if total > 0 {
		tenth := done * 10 / total
		if tenth == b.lastTenth {
			return
		}
		b.lastTenth = tenth
	} else if now.Sub(b.lastLine) < 10*time.Second {
		return
	}
	b.lastLine = now
	fmt.Fprintf(b.out, "  %s: %s\n", b.label, b.figures(done, total, now))
}

// redraw is how often the terminal's bar is drawn at most.
const redraw = 100 * time.Millisecond

// barWidth is the bar's length in cells on a terminal.
const barWidth = 30

// figures says how far the step is: on a terminal with a bar, then the
// bytes, the share, the rate and the time left, as far as each is known.
func (b *Bar) figures(done, total int64, now time.Time) string {
	var s strings.Builder
	if b.tty && total > 0 {
		full := int(min(done, total) * barWidth / total)
		s.WriteString("[" + strings.Repeat("=", full) + strings.Repeat(" ", barWidth-full) + "] ")
	}
	rate := b.rate(done, now)
	if total > 0 {
		fmt.Fprintf(&s, "%s of %s (%d%%)", units.Size(done), units.Size(total), done*100/total)
	} else {
		s.WriteString(units.Size(done).String())
	}
	if rate > 0 {
		fmt.Fprintf(&s, ", %s/s", units.Size(int64(rate)))
		if total > 0 && done < total {
			eta := time.Duration(float64(total-done) / rate * float64(time.Second))
			s.WriteString(", ETA " + eta.Round(time.Second).String())
		}
	}
	return s.String()
}

// rate is the bytes a second this run moved, 0 until it is measurable.
func (b *Bar) rate(done int64, now time.Time) float64 {
	s := now.Sub(b.began).Seconds()
	if s < 0.5 || done <= b.first {
		return 0
	}
	return float64(done-b.first) / s
}

// Done ends the bar with a line saying how long the step took.
func (b *Bar) Done() {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.done {
		return
	}
	b.done = true
	if b.tty && !b.drawn.IsZero() {
		fmt.Fprint(b.out, "\r\033[K") // the bar gives way to the line below
	}
	fmt.Fprintf(b.out, "  %-9s done (%s)\n", b.label, b.now().Sub(b.began).Round(100*time.Millisecond))
}
