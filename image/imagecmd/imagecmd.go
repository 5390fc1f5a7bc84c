// Package imagecmd is the image commands of cowork-hostd: fetch, verify
// and disk. They need what the CLI must not link to start fast (an HTTP
// client with TLS, a qcow2 reader), so the CLI runs them in the daemon
// binary and follows their progress on its stdout, one hostdwire.Line of
// JSON at a time (see cowork.Fetch and cowork.Create).
package imagecmd

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"sync"
	"time"

	"github.com/coworkhq/cowork/image"
	"github.com/coworkhq/cowork/internal/hostdwire"
)

// UsageError is a command line Run does not take.
type UsageError struct{ Err error }

func (e *UsageError) Error() string { return e.Err.Error() }

// Run runs the image command name (fetch, verify or disk) with its flags
// in args, writing its progress and result to stdout.
func Run(ctx context.Context, name string, args []string, stdout io.Writer) error {
	out := &lines{w: stdout}
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	var result string
	var run func() error
	switch name {
	case "fetch":
		url := fs.String("url", "", "what to download")
		sum := fs.String("sha256", "", "the digest the download must have; none: not verified")
		dir := fs.String("dir", "", "the cache folder it goes in")
		run = func() (err error) {
			if *url == "" || *dir == "" {
				return &UsageError{errors.New("fetch: --url and --dir are required")}
			}
			result, err = image.Fetch(ctx, nil, *url, *sum, *dir, func(phase string) image.Progress { return out.phase(phase) })
			return err
		}
	case "verify":
		file := fs.String("file", "", "the file to check")
		sum := fs.String("sha256", "", "the digest it must have")
		run = func() error {
			if *file == "" || *sum == "" {
				return &UsageError{errors.New("verify: --file and --sha256 are required")}
			}
			result = *file
			return image.Verify(*file, *sum, out.phase("verify"))
		}
	case "disk":
		from := fs.String("from", "", "the image: raw or qcow2")
		to := fs.String("to", "", "the raw disk to write")
		size := fs.Int64("size", 0, "the disk's size in bytes")
		run = func() error {
			if *from == "" || *to == "" || *size <= 0 {
				return &UsageError{errors.New("disk: --from, --to and a positive --size are required")}
			}
			result = *to
			return image.MakeDisk(*from, *to, *size, out.phase("convert"))
		}
	default:
		return &UsageError{fmt.Errorf("no image command %q", name)}
	}
	if err := fs.Parse(args); err != nil {
		return &UsageError{fmt.Errorf("%s: %w", name, err)}
	}
	if fs.NArg() > 0 {
		return &UsageError{fmt.Errorf("%s: unexpected argument %q", name, fs.Arg(0))}
	}
	if err := run(); err != nil {
		return err
	}
	return out.write(hostdwire.Line{Path: result})
}

// every is how often progress is printed: enough for a bar to move, few
// enough that a fast conversion is not slowed by its own report.
const every = 100 * time.Millisecond

// lines writes hostdwire.Lines, one step's progress at most every
// `every` (and its last figure, when done reaches total).
type lines struct {
	mu   sync.Mutex
	w    io.Writer
	last time.Time
}

func (l *lines) write(line hostdwire.Line) error {
	b, err := json.Marshal(line)
	if err != nil {
		return err
	}
	_, err = l.w.Write(append(b, '\n'))
	return err
}

type phaseProgress struct {
	l    *lines
	name string
}

func (l *lines) phase(name string) image.Progress { return &phaseProgress{l: l, name: name} }

func (p *phaseProgress) Update(done, total int64) {
	p.l.mu.Lock()
	defer p.l.mu.Unlock()
	if now := time.Now(); now.Sub(p.l.last) >= every || (total > 0 && done >= total) {
		p.l.last = now
		p.l.write(hostdwire.Line{Phase: p.name, Done: done, Total: total})
	}
}
