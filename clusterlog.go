package cowork

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/coworkhq/cowork/hostd/netstack/audit"
)

// ClusterLog hands fn each record, not before since, of the audit log a
// kubevirt instance's traffic is in: its namespace's egress proxy's,
// which `cowork-hostd-kubevirt log` reads through the API server (see
// docs/scale-out.md). That log is the namespace's: every sandbox's
// traffic, each record naming its client's address. With follow it goes
// on with new records until ctx ends, which is no error. The lines are
// parsed and checked here as a local log's are (audit.Feed), so that
// what the cluster sends is shown no more readily than a local file; it
// returns how many damaged lines were skipped here.
func (i *Instance) ClusterLog(ctx context.Context, since time.Time, follow bool, fn func(*audit.Record) error) (skipped int, err error) {
	if !i.Config.Remote() {
		return 0, fmt.Errorf("instance %s runs on this machine: its audit log is %s", i.Name, i.Paths.NetworkLog())
	}
	args := []string{"log", "--name", i.Name}
	if !since.IsZero() {
		args = append(args, "--since", since.UTC().Format(time.RFC3339Nano))
	}
	if follow {
		args = append(args, "--follow")
	}
	rctx, cancel := context.WithCancel(ctx)
	defer cancel()
	feed := &audit.Feed{Since: since, Fn: fn}
	var fnErr error
	_, err = kubevirtHostd.run(rctx, func(line []byte) {
		if fnErr == nil {
			if fnErr = feed.Line(line); fnErr != nil {
				cancel() // fn's error (stdout closed) ends the read
			}
		}
	}, args...)
	switch {
	case fnErr != nil:
		return feed.Skipped, fnErr
	case ctx.Err() != nil:
		return feed.Skipped, nil // interrupted: the user's to end
	case errors.As(err, new(*binaryError)):
		return feed.Skipped, fmt.Errorf("read the egress proxy's audit log of %s: %w", where(i.Config), err)
	}
	return feed.Skipped, err
}
