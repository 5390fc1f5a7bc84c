package status

import (
	"fmt"

	"github.com/coworkhq/cowork"
	"github.com/coworkhq/cowork/hostd/instance"
	"github.com/coworkhq/cowork/internal/termsafe"
)

// A guest on a cluster (init --backend kubevirt) is not on this
// machine's network stack and shares none of its folders: status shows
// no guest IP, network or workspace for it. Its daemon here is not its
// VM there: without the daemon, status says what it does not know.

// Cluster is where a guest on a cluster runs.
type Cluster struct {
	Backend   string `json:"backend"`           // kubevirt
	Context   string `json:"context,omitempty"` // empty: the kubeconfig's current
	Namespace string `json:"namespace"`
	Image     string `json:"image"` // the container disk
}

// clusterOf is cfg's Cluster, nil for a guest on this machine.
func clusterOf(cfg *instance.Config) *Cluster {
	if !cfg.Remote() {
		return nil
	}
	c := &Cluster{Backend: cfg.Backend}
	if k := cfg.Cluster; k != nil {
		c.Context, c.Namespace, c.Image = k.Context, k.Namespace, k.Image
	}
	return c
}

// clusterLine is where a guest on a cluster runs, for a person.
func clusterLine(k *Cluster) string {
	ctx := "context " + termsafe.Line(k.Context)
	if k.Context == "" {
		ctx = "the kubeconfig's current context"
	}
	return fmt.Sprintf("%s, namespace %s, %s, image %s", termsafe.Line(k.Backend), termsafe.Line(k.Namespace), ctx, termsafe.Line(k.Image))
}

// runningOnCluster drops from a running hostd's answer what belongs to
// this machine's network stack, which a cluster's guest is not on: the
// stack's guest address and its traffic (a hostd may report them all
// the same).
func runningOnCluster(st *Status) {
	st.GuestIP, st.Network = "", nil
}

// stoppedOnCluster is the note of a guest on a cluster whose daemon
// does not run here: the VM there was halted by `cowork stop`, or runs
// on when the daemon died (deadPid, 0 when unknown).
func stoppedOnCluster(cfg *instance.Config, deadPid int) string {
	check := cowork.ClusterVMCheck(cfg)
	if deadPid != 0 {
		return fmt.Sprintf("hostd (pid %d) died; its leftovers here were cleaned up, but its VM in the cluster may still run: `%s` shows it", deadPid, check)
	}
	return fmt.Sprintf("its VM in the cluster, if it has one yet, is halted by `cowork stop`, and may still run if this machine's hostd died: `%s` shows it", check)
}
