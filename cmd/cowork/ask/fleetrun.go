package ask

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/coworkhq/cowork"
	"github.com/coworkhq/cowork/cmd/cowork/cmdutil"
	"github.com/coworkhq/cowork/cmd/cowork/iostreams"
	"github.com/coworkhq/cowork/internal/termsafe"
)

// fleet runs tasks, at most parallel at once, each through run with
// streams of its own: its lines tagged onto the fleet's, or into files,
// or (capture) kept for the JSON results.
type fleet struct {
	tasks    []Task
	parallel int
	ios      *iostreams.IOStreams
	capture  bool
	// files are each task's output files in --out's folder, made before
	// the fleet began (openOutDir); nil without --out.
	files map[string]outFiles
	run   func(ctx context.Context, t Task, ios *iostreams.IOStreams, ready func(*cowork.Throwaway)) error
	mu    sync.Mutex // one whole line at a time on the fleet's streams
	// interrupted: a signal stopped the launches; gone: the fleet's own
	// stdout or stderr was closed (its reader went), which does too.
	interrupted bool
	gone        atomic.Bool
}

// outFiles are one task's stdout and stderr files.
type outFiles struct{ out, err *os.File }

// Result is how one task of a fleet went.
type Result struct {
	Task
	// ExitCode is the ask's, -1 when it did not end with one: Error then
	// says why (the clone did not start, the fleet was interrupted first).
	ExitCode   int       `json:"exit_code"`
	Error      string    `json:"error,omitempty"`
	NotRun     bool      `json:"not_run,omitempty"`
	RunID      string    `json:"run_id,omitempty"`
	Clone      string    `json:"clone,omitempty"`
	Ready      string    `json:"ready,omitempty"` // hot, warm or cold: how its clone was had
	Started    time.Time `json:"started,omitzero"`
	DurationMs int64     `json:"duration_ms"`
	// Output is what the task printed on stdout, with --json; at most
	// maxCapture bytes of it (Truncated then).
	Output     string `json:"output,omitempty"`
	Truncated  bool   `json:"output_truncated,omitempty"`
	OutputFile string `json:"output_file,omitempty"`
	ErrorFile  string `json:"error_file,omitempty"`
}

// maxCapture bounds the output --json keeps of one task; maxLine the
// part of a line held back for its end before it is tagged anyway.
const (
	maxCapture = 1 << 20
	maxLine    = 64 << 10
)

// start runs the fleet until every task has ended or, after a Ctrl-C or
// SIGTERM, every started one: those not yet started are not run. A
// running task sees the signal as an ask does (its claude interrupted,
// its clone discarded), through its own streams' forwarding.
func (f *fleet) start(ctx context.Context) []Result {
	// A closed stdout (`| head`) fails the writes instead of killing the
	// fleet with its clones running; it stops the launches (gone).
	signal.Ignore(syscall.SIGPIPE)
	launch, stop := signal.NotifyContext(ctx, os.Interrupt, syscall.SIGTERM, syscall.SIGHUP)
	defer stop()
	results := make([]Result, len(f.tasks))
	slots := make(chan struct{}, f.parallel)
	var wg sync.WaitGroup
	for k, t := range f.tasks {
		results[k] = Result{Task: t, ExitCode: -1}
		if launch.Err() == nil && !f.gone.Load() {
			select {
			case slots <- struct{}{}:
			case <-launch.Done():
			}
		}
		if launch.Err() != nil || f.gone.Load() {
			results[k].NotRun, results[k].Error = true, "not run: the fleet was interrupted"
			if f.gone.Load() {
				results[k].Error = "not run: the fleet's output was closed"
			}
			f.closeFiles(t.ID)
			continue
		}
		wg.Add(1)
		go func(r *Result) {
			defer wg.Done()
			defer func() { <-slots }()
			f.one(ctx, r)
		}(&results[k])
	}
	wg.Wait()
	f.interrupted = launch.Err() != nil
	return results
}

// closeFiles closes and removes the (empty) output files of a task that
// will not run, so that a later fleet may run it into the same folder.
func (f *fleet) closeFiles(id string) {
	if o, ok := f.files[id]; ok {
		for _, file := range []*os.File{o.out, o.err} {
			file.Close()
			os.Remove(file.Name())
		}
	}
}

// one runs r's task and fills in r.
func (f *fleet) one(ctx context.Context, r *Result) {
	out, errOut, endLine, finish := f.streams(r)
	r.Started = time.Now()
	err := f.run(ctx, r.Task, iostreams.Writers(strings.NewReader(""), out, errOut), func(t *cowork.Throwaway) {
		r.RunID, r.Clone, r.Ready = t.ID, t.Name, t.Ready
	})
	r.DurationMs = time.Since(r.Started).Milliseconds()
	var exit *cmdutil.ExitError
	switch {
	case err == nil:
		r.ExitCode = 0
	case errors.As(err, &exit):
		r.ExitCode, r.Error = exit.Code, exit.Msg
	default:
		r.Error = err.Error()
		endLine()
		fmt.Fprintln(errOut, "cowork:", termsafe.Text(err.Error()))
	}
	finish()
}

// streams are r's stdout and stderr, what ends a line its stderr left
// open (before a message of the fleet's), and what flushes them once it
// ended.
func (f *fleet) streams(r *Result) (out, errOut io.Writer, endLine, finish func()) {
	tagErr := &tagged{mu: &f.mu, w: f.ios.ErrOut, tag: "[" + r.ID + "] ", gone: &f.gone}
	errOut = tagErr
	var closers []func()
	var capture *capped
	switch {
	case f.capture:
		capture = &capped{max: maxCapture}
		out = capture
	case f.files == nil:
		tagOut := &tagged{mu: &f.mu, w: f.ios.Out, tag: "[" + r.ID + "] ", gone: &f.gone}
		out = tagOut
		closers = append(closers, tagOut.flush)
	}
	if o, ok := f.files[r.ID]; ok {
		r.OutputFile, r.ErrorFile = o.out.Name(), o.err.Name()
		out, errOut = both(out, o.out), both(errOut, o.err)
		closers = append(closers, func() { o.out.Close(); o.err.Close() })
	}
	if out == nil {
		out = io.Discard
	}
	return out, errOut, tagErr.flush, func() {
		tagErr.flush()
		for _, c := range closers {
			c()
		}
		if capture != nil {
			r.Output, r.Truncated = capture.String(), capture.dropped
		}
	}
}

// both writes to a and b, a possibly nil.
func both(a, b io.Writer) io.Writer {
	if a == nil {
		return b
	}
	return io.MultiWriter(a, b)
}

// tagged writes whole lines to w, each behind tag, under mu, so that
// tasks' lines never break into one another's. A line longer than maxLine
// goes out in pieces, each tagged. A write to w that fails (its reader
// went) sets gone; the task's output is dropped from then on.
type tagged struct {
	mu      *sync.Mutex
	w       io.Writer
	tag     string
	gone    *atomic.Bool
	buf     []byte
	scanned int // buf[:scanned] holds no line end
}

func (t *tagged) Write(p []byte) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.buf = append(t.buf, p...)
	start := 0
	for {
		i := bytes.IndexByte(t.buf[start+t.scanned:], '\n')
		if i < 0 && len(t.buf)-start < maxLine {
			t.scanned = len(t.buf) - start
			break
		}
		end := start + t.scanned + i + 1
		if i < 0 {
			end = start + maxLine
		}
		t.emit(t.buf[start:end])
		start, t.scanned = end, 0
	}
	if start > 0 { // only after a line went out: a byte at a time stays linear
		t.buf = append(t.buf[:0], t.buf[start:]...)
	}
	return len(p), nil
}

// emit writes one tagged line; mu is held.
func (t *tagged) emit(line []byte) {
	if t.gone != nil && t.gone.Load() {
		return
	}
	b := make([]byte, 0, len(t.tag)+len(line)+1)
	b = append(append(b, t.tag...), line...)
	if !bytes.HasSuffix(b, []byte("\n")) {
		b = append(b, '\n')
	}
	if _, err := t.w.Write(b); err != nil && t.gone != nil {
		t.gone.Store(true)
	}
}

// flush writes what is left of a last line without its end.
func (t *tagged) flush() {
	t.mu.Lock()
	defer t.mu.Unlock()
	if len(t.buf) > 0 {
		t.emit(t.buf)
		t.buf, t.scanned = nil, 0
	}
}

// capped keeps the first max bytes written to it, and whether more came.
type capped struct {
	mu      sync.Mutex
	max     int
	buf     bytes.Buffer
	dropped bool
}

func (c *capped) Write(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	room := c.max - c.buf.Len()
	if room < len(p) {
		c.dropped = true
		if room > 0 {
			c.buf.Write(p[:room])
		}
		return len(p), nil
	}
	c.buf.Write(p)
	return len(p), nil
}

func (c *capped) String() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return strings.ToValidUTF8(c.buf.String(), "\uFFFD")
}

// report prints the results, a table on stderr (or JSON on stdout), and
// is the fleet's outcome: nil when every task exited 0, else an exit of 1,
// or 130 when the fleet was interrupted.
func (f *fleet) report(results []Result, asJSON bool) error {
	var failed []string
	for _, r := range results {
		if r.ExitCode != 0 {
			failed = append(failed, r.ID)
		}
	}
	if asJSON {
		enc := json.NewEncoder(f.ios.Out)
		enc.SetIndent("", "  ")
		if err := enc.Encode(results); err != nil {
			return err
		}
	} else {
		tw := tabwriter.NewWriter(f.ios.ErrOut, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "TASK\tEXIT\tTIME\tRUN\tREADY\tOUTPUT")
		for _, r := range results {
			exit := fmt.Sprint(r.ExitCode)
			switch {
			case r.NotRun:
				exit = "not run"
			case r.ExitCode == -1:
				exit = "error"
			}
			took := "-"
			if !r.NotRun {
				took = (time.Duration(r.DurationMs) * time.Millisecond).Round(100 * time.Millisecond).String()
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", r.ID, exit, took, dash(r.RunID), dash(r.Ready), dash(r.OutputFile))
		}
		tw.Flush()
	}
	switch {
	case f.interrupted:
		return &cmdutil.ExitError{Code: 130, Msg: fmt.Sprintf("the fleet was interrupted: %d of %d tasks did not succeed (%s)", len(failed), len(results), list(failed))}
	case len(failed) > 0:
		return &cmdutil.ExitError{Code: 1, Msg: fmt.Sprintf("%d of %d tasks did not succeed (%s); `cowork proxy --runs` shows their runs", len(failed), len(results), list(failed))}
	}
	return nil
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// list names at most ten ids.
func list(ids []string) string {
	if len(ids) > 10 {
		return strings.Join(ids[:10], ", ") + fmt.Sprintf(" and %d more", len(ids)-10)
	}
	return strings.Join(ids, ", ")
}
