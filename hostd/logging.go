package hostd

import (
	"fmt"
	"io"
	stdlog "log"
	"log/slog"
	"strings"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/coworkhq/cowork/hostd/instance"
	"github.com/coworkhq/cowork/internal/lograte"
	"github.com/coworkhq/cowork/internal/rotlog"
)

// Bounds of hostd.log: 4 MiB a file, the current one and two more.
const (
	HostdLogMax  = 4 << 20
	HostdLogKeep = 2
)

// logCheckEvery is how often hostd.log's size is checked for what was
// written to stderr around the logger (a library printing, Go's runtime).
const logCheckEvery = 5 * time.Second

// OpenLog is hostd's logger. When hostd's stderr is the instance's
// hostd.log (`cowork start` launches it so), hostd takes the file over:
// capped and rotated (rotlog), with stdout and stderr following each new
// file, so Go's panic report lands in the current one and what libraries
// print there counts toward the cap. Run by hand on a terminal, it logs to
// stderr as it is. Either way each message is rate-limited (lograte), and
// the standard library's log (net/http's servers) and logrus (go-diskfs,
// which the seed disk and image inspection use) go through the same
// logger. The file is returned when taken over.
func OpenLog(name string, stderr io.Writer) (*slog.Logger, *rotlog.File) {
	out := stderr
	var file *rotlog.File
	if paths, err := instance.PathsFor(name); err == nil && rotlog.IsStderr(paths.HostdLog()) {
		f, err := rotlog.Open(paths.HostdLog(), rotlog.Options{MaxSize: HostdLogMax, Keep: HostdLogKeep, OnOpen: rotlog.OntoStdio})
		if err != nil {
			fmt.Fprintf(stderr, "hostd.log is not capped: %v\n", err)
		} else {
			out, file = f, f
			go func() {
				for range time.Tick(logCheckEvery) {
					_ = f.Check()
				}
			}()
		}
	}
	log := slog.New(lograte.New(slog.NewTextHandler(out, nil), lograte.DefaultBurst, lograte.DefaultEvery)).With("instance", name)
	// Libraries' lines are their own text, each different: they go in as
	// one message, so one limit holds them all.
	stdlog.SetFlags(0)
	stdlog.SetOutput(libraryLog{log})
	logrus.SetOutput(libraryLog{log})
	return log, file
}

// libraryLog turns a library's log lines into one rate-limited message.
type libraryLog struct{ log *slog.Logger }

func (l libraryLog) Write(p []byte) (int, error) {
	l.log.Warn("library", "said", strings.TrimSpace(string(p)))
	return len(p), nil
}
