package main

import (
	"bufio"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os/signal"
	"syscall"
	"time"

	"github.com/coworkhq/cowork/hostd/egresslog"
	"github.com/coworkhq/cowork/hostd/instance"
)

// logCmd copies the audit log of the egress proxy of the named
// instance's namespace to stdout, one record a JSON line, as `cowork
// proxy` reads it (the namespace's log: every sandbox's traffic, each
// record naming its client). With --follow it goes on with new records
// until interrupted, which is no error.
func logCmd(ctx context.Context, args []string, stdout, stderr io.Writer, reach connector) error {
	fs := flag.NewFlagSet("log", flag.ContinueOnError)
	name := fs.String("name", "", "the instance")
	since := fs.String("since", "", "the oldest record's time, RFC 3339 (none: all of the log)")
	follow := fs.Bool("follow", false, "go on with new records until interrupted")
	if err := parse(fs, args); err != nil {
		return err
	}
	if *name == "" {
		return usageError{errors.New("log: --name is required")}
	}
	if *since != "" {
		if _, err := time.Parse(time.RFC3339, *since); err != nil {
			return usageError{fmt.Errorf("log: --since %q: want an RFC 3339 time, such as 2025-01-02T15:04:05Z", *since)}
		}
	}
	cfg, b, err := kubeInstance(*name, reach)
	if err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(ctx, syscall.SIGTERM, syscall.SIGINT, syscall.SIGHUP)
	defer stop()
	w := bufio.NewWriterSize(stdout, 64<<10)
	skipped, err := b.EgressLog(ctx, cfg.Cluster.Namespace, egresslog.Request{Since: *since, Follow: *follow}, func(rec []byte) error {
		w.Write(rec)
		w.WriteByte('\n')
		if *follow { // a follower sees each record as it comes
			return w.Flush()
		}
		return nil
	})
	if ferr := w.Flush(); err == nil {
		err = ferr
	}
	if skipped > 0 {
		fmt.Fprintf(stderr, "%s: skipped %d damaged lines of the egress proxy's log\n", instance.KubeVirtHostd, skipped)
	}
	if ctx.Err() != nil {
		return nil // interrupted: the user's to end
	}
	return err
}
