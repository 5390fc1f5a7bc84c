package initcmd

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/spf13/pflag"

	"github.com/coworkhq/cowork"
	"github.com/coworkhq/cowork/cmd/cowork/cmdutil"
	"github.com/coworkhq/cowork/hostd/instance"
)

// `cowork init --backend kubevirt` makes an instance whose guest runs on
// a Kubernetes cluster through KubeVirt: its settings are written here,
// and its daemon, cowork-hostd-kubevirt, makes the VM in the cluster at
// its first start. No image is fetched or inspected, no disk, golden
// disk or seed is made on this machine.

// clusterArch is a kubevirt guest's architecture when --arch is not
// given: most clusters' nodes are amd64, whatever this machine is.
const clusterArch = "amd64"

func addClusterFlags(f *pflag.FlagSet, o *Options) {
	f.StringVar(&o.Backend, "backend", "local", "where the guest runs: local (this machine) or kubevirt (a Kubernetes cluster through KubeVirt; needs cowork-hostd-kubevirt)")
	f.StringVar(&o.Context, "context", "", "with --backend kubevirt: the kubeconfig context of the cluster (default: the current one)")
	f.StringVar(&o.Namespace, "namespace", instance.DefaultNamespace, "with --backend kubevirt: the namespace of the VM (it needs cowork's egress proxy)")
}

// localFlags are init's flags that make no sense for a guest on a
// cluster, and why.
var localFlags = []struct {
	flags []string
	why   string
}{
	{[]string{"kernel", "initrd", "cmdline"}, "the cluster boots the container disk with its own loader"},
	{[]string{"image-sha256"}, "pin the container disk by digest instead (--image REF@sha256:...)"},
	{[]string{"no-golden"}, "a cluster's disk is never a golden disk's clone"},
	{[]string{"mount"}, "a cluster's guest cannot reach this machine's folders"},
	{[]string{"ssh-agent"}, "this machine's SSH agent is lent through its network stack, which a cluster's guest is not on"},
	{[]string{"publish"}, "ports are published by this machine's network, which the guest is not on"},
	{[]string{"network-mode", "allow", "deny", "allow-host-port", "upstream-proxy", "max-flows"},
		"the guest's traffic leaves through its namespace's egress proxy, whose policy holds for every guest there (`" + instance.KubeVirtHostd + " egress`)"},
}

// checkBackend checks --backend and the flags that go with it, before
// anything else: --context and --namespace need kubevirt, which needs
// --image and takes none of localFlags.
func (o *Options) checkBackend() error {
	given := func(flag string) bool { return o.Changed != nil && o.Changed(flag) }
	switch o.Backend {
	case "", "local", instance.BackendKubeVirt:
	default:
		return cmdutil.FlagErrorf("--backend %q: want local (this machine) or kubevirt (a Kubernetes cluster)", o.Backend)
	}
	if o.Backend != instance.BackendKubeVirt {
		var named []string
		for _, f := range []string{"context", "namespace"} {
			if given(f) {
				named = append(named, "--"+f)
			}
		}
		switch len(named) {
		case 1:
			return cmdutil.FlagErrorf("%s places the guest on a cluster: add --backend kubevirt (with --image, a container disk), or leave it out", named[0])
		case 2:
			return cmdutil.FlagErrorf("%s place the guest on a cluster: add --backend kubevirt (with --image, a container disk), or leave them out", strings.Join(named, " and "))
		}
		return nil
	}
	var errs []error
	for _, l := range localFlags {
		var named []string
		for _, f := range l.flags {
			if given(f) {
				named = append(named, "--"+f)
			}
		}
		if len(named) > 0 {
			errs = append(errs, fmt.Errorf("--backend kubevirt takes no %s: %s", strings.Join(named, ", "), l.why))
		}
	}
	if o.Image == "" {
		errs = append(errs, errors.New("--backend kubevirt needs --image, a container disk, e.g. quay.io/containerdisks/ubuntu:22.04"))
	}
	if err := errors.Join(errs...); err != nil {
		return &cmdutil.FlagError{Err: err}
	}
	return nil
}

// clusterConfig finishes Config for a guest on a cluster: c holds the
// settings both kinds share, errs their problems so far.
func (o *Options) clusterConfig(c *instance.Config, errs []error) (*instance.Config, instance.Sources, error) {
	c.Backend = instance.BackendKubeVirt
	c.Arch = cmp.Or(o.Arch, clusterArch)
	c.Cluster = &instance.Cluster{Context: o.Context, Namespace: cmp.Or(o.Namespace, instance.DefaultNamespace), Image: o.Image}
	// Its memory is a node's of the cluster, not this machine's.
	errs = append(errs, c.Validate(0))
	if home, err := instance.Home(); err == nil {
		errs = append(errs, c.CheckWorkspace(home))
	}
	if err := errors.Join(errs...); err != nil {
		return nil, instance.Sources{}, &cmdutil.FlagError{Err: err}
	}
	o.finish(c)
	return c, instance.Sources{}, nil
}

// createOnCluster writes the new kubevirt instance c and starts it as
// any init does: its daemon makes the VM in the cluster.
func (o *Options) createOnCluster(ctx context.Context, c *instance.Config, began time.Time) error {
	k := c.Cluster
	where := "namespace " + k.Namespace
	if k.Context != "" {
		where += " of context " + k.Context
	}
	fmt.Fprintf(o.IO.ErrOut, "Creating %s on a cluster (kubevirt, %s; %s, %d CPUs, %s memory, %s disk; nothing of this machine is shared with it)\n", c.Name, where, c.Arch, c.CPUs, c.Memory, c.Disk)
	fmt.Fprintf(o.IO.ErrOut, "  image     %s (a container disk: the cluster pulls it)\n", k.Image)
	if _, err := cowork.Create(ctx, c, instance.Sources{}, nil); err != nil {
		return err
	}
	return o.startCreated(ctx, c.Name, began, false)
}

// cluster is c's cluster settings, empty for a local instance.
func cluster(c *instance.Config) instance.Cluster {
	if c.Cluster == nil {
		return instance.Cluster{}
	}
	return *c.Cluster
}
