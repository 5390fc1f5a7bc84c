package proxycmd

import (
	"fmt"

	"github.com/coworkhq/cowork"
	"github.com/coworkhq/cowork/hostd/instance"
)

// clusterLog is the log of an instance whose guest runs on a cluster:
// its namespace's egress proxy keeps it, and cowork-hostd-kubevirt reads
// it through the API server (cowork.Instance.ClusterLog). The records go
// through the same filters and the same rendering as a local log's, and
// are shown no more readily: each is parsed here, and its text printed
// through termsafe.
func (o *Options) clusterLog(inst *cowork.Instance) (logSource, error) {
	if o.Exec != "" {
		return logSource{}, fmt.Errorf("instance %s runs on a cluster, whose egress proxy does not know which guest process made a flow, so no record names an exec; --ask ID keeps an ask's API calls, or `cowork proxy%s` shows all", inst.Name, instance.NameFlag(inst.Name))
	}
	k := inst.Config.Cluster
	ns := "namespace " + k.Namespace
	if k.Context != "" {
		ns += " of context " + k.Context
	}
	hint := ""
	if o.Follow && o.IO.IsStderrTTY() {
		hint = " (Ctrl-C to stop)"
	}
	// Always said, on stderr: a script reading --json has it too, and the
	// records stay on stdout alone.
	fmt.Fprintf(o.IO.ErrOut, "the audit log of the egress proxy of %s: the traffic of all its sandboxes, each record naming its client's address%s\n", ns, hint)
	return logSource{name: "the egress proxy's log", stream: inst.ClusterLog}, nil
}
