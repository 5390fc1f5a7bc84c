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
	"github.com/coworkhq/cowork/internal/units"
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
}

// New starts a bar for a step called label.
func New(ios *iostreams.IOStreams, label string) *Bar {
	return &Bar{label: label, out: ios.ErrOut, tty: ios.IsStderrTTY(), began: time.Now(), lastTenth: -1}
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
	now := time.Now()
	if total > 0 {
		tenth := done * 10 / total
		if tenth == b.lastTenth {
			return
		}
		b.lastTenth = tenth
		fmt.Fprintf(b.out, "  %s: %s of %s (%d%%)%s\n", b.label, units.Size(done), units.Size(total), done*100/total, b.rate(done))
		return
	}
	if now.Sub(b.lastLine) >= 10*time.Second {
		b.lastLine = now
		fmt.Fprintf(b.out, "  %s: %s%s\n", b.label, units.Size(done), b.rate(done))
	}
}

func (b *Bar) rate(done int64) string {
	s := time.Since(b.began).Seconds()
	if s < 0.5 {
		return ""
	}
	return fmt.Sprintf(", %s/s", units.Size(int64(float64(done)/s)))
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
	fmt.Fprintf(b.out, "  %-9s done (%s)\n", b.label, time.Since(b.began).Round(100*time.Millisecond))
}
