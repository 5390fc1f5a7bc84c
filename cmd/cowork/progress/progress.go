// Package progress draws how far a long step is on stderr: a bar with
// bytes, rate and time left on a terminal, plain lines otherwise.
package progress

import (
	"fmt"
	"io"
	"sync"
	"time"

	"github.com/schollz/progressbar/v3"

	"github.com/coworkhq/cowork/cmd/cowork/iostreams"
	"github.com/coworkhq/cowork/units"
)

// Bar follows one step.
type Bar struct {
	mu    sync.Mutex
	label string
	out   io.Writer
	tty   bool
	bar   *progressbar.ProgressBar
	began time.Time
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
		if b.bar == nil {
			max := total
			if max <= 0 {
				max = -1 // a spinner
			}
			b.bar = progressbar.NewOptions64(max,
				progressbar.OptionSetWriter(b.out),
				progressbar.OptionSetDescription(fmt.Sprintf("  %-9s", b.label)),
				progressbar.OptionShowBytes(true),
				progressbar.OptionShowCount(),
				progressbar.OptionSetPredictTime(true),
				progressbar.OptionSetWidth(30),
				progressbar.OptionThrottle(100*time.Millisecond),
				progressbar.OptionClearOnFinish(),
			)
		}
		_ = b.bar.Set64(done)
		return
	}
	// Plain lines: every tenth of the way, or every 10 s when the size is unknown.
	now := b.now()
	rate := b.rate(done, now)
	if total > 0 {
		tenth := done * 10 / total
		if tenth == b.lastTenth {
			return
		}
		b.lastTenth = tenth
		line := fmt.Sprintf("  %s: %s of %s (%d%%)", b.label, units.Size(done), units.Size(total), done*100/total)
		if rate > 0 {
			line += fmt.Sprintf(", %s/s", units.Size(int64(rate)))
			if done < total {
				eta := time.Duration(float64(total-done) / rate * float64(time.Second))
				line += ", ETA " + eta.Round(time.Second).String()
			}
		}
		fmt.Fprintln(b.out, line)
		return
	}
	if now.Sub(b.lastLine) >= 10*time.Second {
		b.lastLine = now
		line := fmt.Sprintf("  %s: %s", b.label, units.Size(done))
		if rate > 0 {
			line += fmt.Sprintf(", %s/s", units.Size(int64(rate)))
		}
		fmt.Fprintln(b.out, line)
	}
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
	if b.bar != nil {
		_ = b.bar.Finish()
	}
	fmt.Fprintf(b.out, "  %-9s done (%s)\n", b.label, b.now().Sub(b.began).Round(100*time.Millisecond))
}
