package cowork

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/coworkhq/cowork/hostd/instance"
	"github.com/coworkhq/cowork/internal/shquote"
)

// An instance whose config says Backend kubevirt runs its guest on a
// Kubernetes cluster: its daemon is cowork-hostd-kubevirt (the kubevirt
// module), launched and asked as cowork-hostd is, over the same control
// socket. What needs the guest's disk, memory or network stack on this
// machine (suspend, snapshots, clones, pools, mounts, published ports,
// the SSH agent, secrets, network policy) is refused for it, by
// localOnly. Its throwaway runs clone its disk in the cluster
// (clusterclone.go).

// KubeVirtHostdEnv names a path to cowork-hostd-kubevirt that overrides
// its lookup, as $COWORK_HOSTD does cowork-hostd's.
const KubeVirtHostdEnv = "COWORK_HOSTD_KUBEVIRT"

// kubevirtHostd runs the instances whose guest runs on a cluster.
var kubevirtHostd = daemon{
	binary:  instance.KubeVirtHostd,
	env:     KubeVirtHostdEnv,
	missing: "it runs the instances on a Kubernetes cluster: `make kubevirt` builds it into bin/; install it beside cowork",
}

// KubeVirtHostdBinary finds cowork-hostd-kubevirt as HostdBinary finds
// cowork-hostd: $COWORK_HOSTD_KUBEVIRT, else beside the running program
// (through symlinks), else on PATH.
func KubeVirtHostdBinary() (string, error) { return kubevirtHostd.find() }

// daemonFor is the daemon that runs cfg's instance.
func daemonFor(cfg *instance.Config) daemon {
	if cfg.Backend == instance.BackendKubeVirt {
		return kubevirtHostd
	}
	return localHostd
}

// LocalOp is something only a guest on this machine can do.
type LocalOp struct {
	cannot  string // "be suspended": what the instance cannot
	instead string // what to do instead, "" for nothing
}

// What only a guest on this machine can do.
var (
	OpSuspend  = LocalOp{"be suspended: its memory would be saved on this machine", "`cowork stop%s` stops it"}
	OpSnapshot = LocalOp{"have snapshots: its disk is a DataVolume in the cluster", ""}
	OpClone    = LocalOp{"be cloned: its disk is a DataVolume in the cluster", ""}
	OpPool     = LocalOp{"have a pool of clones: its disk is a DataVolume in the cluster", ""}
	// A throwaway run (--rm) is no local-only operation: an instance on a
	// cluster has its clone's disk cloned there (clusterclone.go).
	OpMount   = LocalOp{"mount this machine's folders", "`cowork cp%s` copies files in and out"}
	OpPublish = LocalOp{"publish ports here: its guest is not on this machine's network", ""}
	OpResize  = LocalOp{"be resized here: its disk is a DataVolume in the cluster", ""}
	// The network policy is this machine's network stack's, which a
	// cluster's guest is not on: its egress proxy is the namespace's (and
	// so are its relay, with the namespace's API key: `ask` and `claude`
	// work, see CredentialFor; and its audit log, which `cowork proxy`
	// reads from there, clusterlog.go, but nothing here verifies).
	OpPolicy = LocalOp{"take a network policy of its own: its traffic goes through the namespace's egress proxy, whose policy is the namespace's", "`cowork-hostd-kubevirt egress --policy FILE ... | kubectl apply -f -` sets it"}
	// The SSH agent and the secrets are lent through this machine's
	// network stack too.
	OpSSHAgent = LocalOp{"use this machine's SSH agent: the agent is lent through this machine's network stack, and the guest is not on it", ""}
	OpSecret   = LocalOp{"use this machine's secrets: only this machine's network stack swaps their placeholders, and the guest is not on it", ""}
	OpAuditLog = LocalOp{"have its audit log verified here: the namespace's egress proxy keeps it, with its key, in /var/lib/cowork/audit", "`kubectl cp` keeps a copy; checking it in the cluster is not built yet"}
)

// localOnly refuses op for an instance whose guest runs on a cluster;
// nil for one on this machine.
func localOnly(cfg *instance.Config, op LocalOp) error {
	if !cfg.Remote() || op == (LocalOp{}) {
		return nil
	}
	msg := fmt.Sprintf("instance %s runs on a cluster (%s); it cannot %s", cfg.Name, where(cfg), op.cannot)
	instead := op.instead
	if instead == "" {
		instead = "only an instance on this machine can (one made by `cowork init` without --backend kubevirt)"
	}
	return &LocalOnlyError{msg + "; " + strings.ReplaceAll(instead, "%s", instance.NameFlag(cfg.Name))}
}

// where says where a remote instance's guest runs: its backend, and for
// kubevirt its namespace and context.
func where(cfg *instance.Config) string {
	k := cfg.Cluster
	if k == nil {
		return cfg.Backend
	}
	s := fmt.Sprintf("%s, namespace %s", cfg.Backend, k.Namespace)
	if k.Context != "" {
		s += ", context " + k.Context
	}
	return s
}

// LocalOnlyError is an operation refused because the instance's guest
// runs on a cluster; nothing was done.
type LocalOnlyError struct{ msg string }

func (e *LocalOnlyError) Error() string { return e.msg }

// LocalOnly says why the instance cannot do op (a *LocalOnlyError: its
// guest runs on a cluster), or nil. Commands ask it before they do
// anything else; the operations themselves refuse too.
func (i *Instance) LocalOnly(op LocalOp) error { return localOnly(i.Config, op) }

// clusterDeleteTimeout bounds `cowork-hostd-kubevirt delete`: a few API
// calls, and the wait for the VM to go.
const clusterDeleteTimeout = 5 * time.Minute

// deleteInCluster deletes a kubevirt instance's objects in its cluster
// (its VM, DataVolume and seed Secret) with `cowork-hostd-kubevirt delete
// --name NAME`, which succeeds when they are gone, there before or not.
// A binary that is nowhere is a *hostdMissingError.
func deleteInCluster(ctx context.Context, cfg *instance.Config) error {
	if _, err := kubevirtHostd.find(); err != nil {
		return &hostdMissingError{err}
	}
	ctx, cancel := context.WithTimeout(ctx, clusterDeleteTimeout)
	defer cancel()
	_, err := kubevirtHostd.run(ctx, func([]byte) {}, "delete", "--name", cfg.Name)
	return err
}

// hostdMissingError is cowork-hostd-kubevirt found nowhere; it says where
// it was looked for and how to build it.
type hostdMissingError struct{ err error }

func (e *hostdMissingError) Error() string { return e.err.Error() }
func (e *hostdMissingError) Unwrap() error { return e.err }

// clusterKept is the error of a delete that could not delete the
// instance's objects in its cluster (err says why; they may be there or
// not): the instance stays here as it was, but for its guest, which
// stopped when wasRunning.
func (i *Instance) clusterKept(err error, wasRunning bool) error {
	stopped, again := "", "once the cluster can be reached"
	if wasRunning {
		stopped = " (it is stopped)"
	}
	var missing *hostdMissingError
	if errors.As(err, &missing) {
		again = "once " + instance.KubeVirtHostd + " is installed"
	}
	name := instance.NameFlag(i.Name)
	return fmt.Errorf("could not delete instance %s's objects in the cluster (%w); nothing was deleted on this machine%s; run `cowork delete%s` again %s, or `cowork delete%s --keep-cluster-objects` to drop only this machine's record",
		i.Name, err, stopped, name, again, name)
}

// DeleteHere removes a kubevirt instance from this machine alone: it
// stops its daemon here (which halts its VM when it can) as Delete does,
// and removes its folder, without asking the cluster for anything. What
// the cluster holds of it stays; ClusterCleanup says how to delete that.
// An instance on this machine is refused: Delete deletes it.
func (i *Instance) DeleteHere(ctx context.Context, force bool) (StopResult, error) {
	if !i.Config.Remote() {
		return StopResult{}, fmt.Errorf("instance %s runs on this machine: `cowork delete%s` deletes it", i.Name, instance.NameFlag(i.Name))
	}
	if err := i.CanDelete(); err != nil {
		return StopResult{}, err
	}
	r, err := i.Stop(ctx, force, 30*time.Second)
	if err != nil {
		return r, err
	}
	return r, i.removeHere(" --keep-cluster-objects")
}

// ClusterCleanup is the kubectl command that deletes what a kubevirt
// instance may leave in its cluster: its VM (its DataVolume goes with
// it) and its seed Secret; "" for an instance on this machine.
func ClusterCleanup(cfg *instance.Config) string {
	vm := "cowork-" + cfg.Name
	// type/name each: `delete vm A secret B` would take secret and B
	// for the names of more VMs.
	return kubectl(cfg, fmt.Sprintf("delete --ignore-not-found vm/%s secret/%s-cloudinit", vm, vm))
}

// ClusterVMCheck is the kubectl command that shows whether a kubevirt
// instance's VM runs in its cluster (its VirtualMachineInstance); ""
// for an instance on this machine.
func ClusterVMCheck(cfg *instance.Config) string {
	return kubectl(cfg, "get vmi cowork-"+cfg.Name)
}

// kubectl is `kubectl args` in a kubevirt instance's context and
// namespace; "" for an instance on this machine.
func kubectl(cfg *instance.Config, args string) string {
	k := cfg.Cluster
	if !cfg.Remote() || k == nil {
		return ""
	}
	s := "kubectl"
	if k.Context != "" {
		s += " --context " + shquote.Quote(k.Context)
	}
	return s + " -n " + k.Namespace + " " + args
}

// noDisk is the MakeDisk of an instance whose guest runs on a cluster:
// its disk is made there, by its daemon, from its container disk.
func noDisk(instance.Sources, instance.Paths, int64) (string, error) {
	return instance.DiskRaw, nil
}
