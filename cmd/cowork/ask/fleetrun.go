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
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/coworkhq/cowork"
	"github.com/coworkhq/cowork/cmd/cowork/cmdutil"
	"github.com/coworkhq/cowork/cmd/cowork/iostreams"
)

// fleet runs tasks, at most parallel at once, each through run with
// streams of its own: its lines tagged onto the fleet's, or into outDir,
// or (capture) kept for the JSON results.
type fleet struct {
	tasks    []Task
	parallel int
	ios      *iostreams.IOStreams
	outDir   string
	capture  bool
	run      func(ctx context.Context, t Task, ios *iostreams.IOStreams, ready func(*cowork.Throwaway)) error
	mu       sync.Mutex // one whole line at a time on the fleet's streams
}

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
	launch, stop := signal.NotifyContext(ctx, os.Interrupt, syscall.SIGTERM)
	defer stop()
	results := make([]Result, len(f.tasks))
	slots := make(chan struct{}, f.parallel)
	var wg sync.WaitGroup
	for k, t := range f.tasks {
		results[k] = Result{Task: t, ExitCode: -1}
		if launch.Err() == nil {
			select {
			case slots <- struct{}{}:
			case <-launch.Done():
			}
		}
		if launch.Err() != nil {
			results[k].NotRun, results[k].Error = true, "not run: the fleet was interrupted"
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
	return results
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
		fmt.Fprintln(errOut, "cowork:", err)
	}
	finish()
}

// streams are r's stdout and stderr, what ends a line its stderr left
// open (before a message of the fleet's), and what flushes them once it
// ended.
func (f *fleet) streams(r *Result) (out, errOut io.Writer, endLine, finish func()) {
	tagErr := &tagged{mu: &f.mu, w: f.ios.ErrOut, tag: "[" + r.ID + "] "}
	errOut = tagErr
	var closers []func()
	var capture *capped
	switch {
	case f.capture:
		capture = &capped{max: maxCapture}
		out = capture
	case f.outDir == "":
		tagOut := &tagged{mu: &f.mu, w: f.ios.Out, tag: "[" + r.ID + "] "}
		out = tagOut
		closers = append(closers, tagOut.flush)
	}
	if f.outDir != "" {
		r.OutputFile, r.ErrorFile = filepath.Join(f.outDir, r.ID+".out"), filepath.Join(f.outDir, r.ID+".err")
		if o, err := newFile(r.OutputFile); err != nil {
			fmt.Fprintln(tagErr, "cowork:", err)
		} else {
			out = both(out, o)
			closers = append(closers, func() { o.Close() })
		}
		if e, err := newFile(r.ErrorFile); err != nil {
			fmt.Fprintln(tagErr, "cowork:", err)
		} else {
			errOut = both(errOut, e)
			closers = append(closers, func() { e.Close() })
		}
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

// newFile creates a task's output file; one that is there is refused
// (checkOutDir looked before the fleet began).
func newFile(path string) (*os.File, error) {
	return os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o644)
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
// goes out in pieces, each tagged.
type tagged struct {
	mu  *sync.Mutex
	w   io.Writer
	tag string
	buf []byte
}

func (t *tagged) Write(p []byte) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.buf = append(t.buf, p...)
	for {
		i := bytes.IndexByte(t.buf, '\n')
		if i < 0 && len(t.buf) < maxLine {
			break
		}
		end := i + 1
		if i < 0 {
			end = maxLine
		}
		t.emit(t.buf[:end])
		t.buf = t.buf[end:]
	}
	t.buf = bytes.Clone(t.buf) // the consumed head is not kept alive
	return len(p), nil
}

// emit writes one tagged line; mu is held.
func (t *tagged) emit(line []byte) {
	if !bytes.HasSuffix(line, []byte("\n")) {
		line = append(bytes.Clone(line), '\n')
	}
	_, _ = io.WriteString(t.w, t.tag)
	_, _ = t.w.Write(line)
}

// flush writes what is left of a last line without its end.
func (t *tagged) flush() {
	t.mu.Lock()
	defer t.mu.Unlock()
	if len(t.buf) > 0 {
		t.emit(t.buf)
		t.buf = nil
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
	interrupted := false
	for _, r := range results {
		if r.NotRun || r.ExitCode == 130 {
			interrupted = true
		}
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
	case interrupted:
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
