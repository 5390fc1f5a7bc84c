package proxycmd

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/coworkhq/cowork"
	"github.com/coworkhq/cowork/hostd/instance"
)

// runCluster shows the traffic of an instance whose guest runs on a
// cluster: its namespace's egress proxy keeps the audit log, which
// cowork-hostd-kubevirt reads through the API server
// (cowork.Instance.ClusterLog). The records go through the same filters
// and the same rendering as a local log's, and are shown no more
// readily: each is parsed here, and its text printed through termsafe.
func runCluster(ctx context.Context, o *Options, inst *cowork.Instance) error {
	if o.Exec != "" {
		return fmt.Errorf("instance %s runs on a cluster, whose egress proxy does not know which guest process made a flow, so no record names an exec; --ask ID keeps an ask's API calls, or `cowork proxy%s` shows all", inst.Name, instance.NameFlag(inst.Name))
	}
	out, done, err := o.output()
	if err != nil {
		return err
	}
	defer done()
	ctx, stop := signal.NotifyContext(ctx, os.Interrupt, syscall.SIGTERM)
	defer stop()
	k := inst.Config.Cluster
	ns := "namespace " + k.Namespace
	if k.Context != "" {
		ns += " of context " + k.Context
	}
	// Always said, on stderr: a script reading --json has it too, and the
	// records stay on stdout alone.
	fmt.Fprintf(o.IO.ErrOut, "the audit log of the egress proxy of %s: the traffic of all its sandboxes, each record naming its client's address%s\n", ns, followHint(o))
	skipped, err := inst.ClusterLog(ctx, o.since(), o.Follow, o.show(out))
	if skipped > 0 {
		fmt.Fprintf(o.IO.ErrOut, "cowork: skipped %d damaged lines of the egress proxy's log\n", skipped)
	}
	return err
}

// followHint ends the stderr line of a follow on a terminal.
func followHint(o *Options) string {
	if o.Follow && o.IO.IsStderrTTY() {
		return " (Ctrl-C to stop)"
	}
	return ""
}
