package kubevirt

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/dynamic"

	"github.com/coworkhq/cowork/hostd"
	"github.com/coworkhq/cowork/hostd/instance"
	"github.com/coworkhq/cowork/hostd/machine"
	"github.com/coworkhq/cowork/image"
	"github.com/coworkhq/cowork/image/agentbin"
)

// The daemon's side: cowork-hostd-kubevirt runs hostd (the same daemon,
// control socket and agent relay as a local instance) with a Machine on
// the cluster instead of a local VM.

var (
	serviceResource       = schema.GroupVersionResource{Version: "v1", Resource: "services"}
	networkPolicyResource = schema.GroupVersionResource{Group: "networking.k8s.io", Version: "v1", Resource: "networkpolicies"}
)

// Backend is a cluster to run instances' guests on.
type Backend struct {
	Client dynamic.Interface
	Dial   Dialer
	// Forward reaches the egress pod's sessions port (its relay's), for
	// `ask` and `claude`; nil: they are refused.
	Forward PortForwarder
	// Poll is how often its Machines read their VMI; zero is Machine's
	// default.
	Poll time.Duration
}

// SpecFor is the VM of the kubevirt instance cfg.
func SpecFor(cfg *instance.Config) (Spec, error) {
	if cfg.Backend != instance.BackendKubeVirt || cfg.Cluster == nil {
		return Spec{}, fmt.Errorf("instance %s does not run on a cluster (its backend is %q); it is cowork-hostd's to run", cfg.Name, cfg.Backend)
	}
	return Spec{
		Instance:  cfg.Name,
		Namespace: cfg.Cluster.Namespace,
		CPUs:      cfg.CPUs,
		Memory:    int64(cfg.Memory),
		Disk:      int64(cfg.Disk),
		Image:     cfg.Cluster.Image,
		CloneOf:   cfg.Cluster.CloneOf,
		Arch:      cfg.Arch,
		MAC:       hostd.GuestFor(cfg).MAC,
	}, nil
}

// NewMachine is hostd's Options.NewMachine for the kubevirt instance
// cfg: the guest is seeded as a local one is, but for its proxy, which is
// the namespace's egress proxy (Egress), read from its Service at each
// start, and its agent, which it fetches from that proxy. A namespace
// without that proxy, or without the NetworkPolicy that makes it the
// sandboxes' only way out (checkWall), runs no guest: one would reach
// the network unaudited. The failure is the start's, reported to `cowork
// start` as any boot's.
func (b Backend) NewMachine(cfg *instance.Config) (func(machine.Config, *slog.Logger) (machine.Machine, error), error) {
	spec, err := SpecFor(cfg)
	if err != nil {
		return nil, err
	}
	if err := spec.Check(); err != nil {
		return nil, err
	}
	return func(machine.Config, *slog.Logger) (machine.Machine, error) {
		ctx, cancel := context.WithTimeout(context.Background(), clusterWait)
		defer cancel()
		svc, err := b.egressProxy(ctx, spec.Namespace, spec.Instance)
		if err != nil {
			return nil, err
		}
		proxy, err := ProxyURL(svc)
		if err != nil {
			return nil, err
		}
		relayURL, err := RelayURL(svc)
		if err != nil {
			return nil, err
		}
		g := hostd.GuestFor(cfg)
		// The relay is reached directly, not through the proxy (which
		// takes public addresses only).
		g.ProxyURL, g.NoProxy = proxy, "localhost,127.0.0.1,::1,"+svc.Spec.ClusterIP
		g.ShareTag = "" // nothing of this machine is shared: /workspace is the guest's own
		// The seed holds no agent (a Secret is too small for one): the
		// guest fetches this build's from the egress proxy, which carries
		// the same agents, and installs it only if its sum is this one.
		if g.AgentSum, err = agentbin.Sum(cfg.Arch); err != nil {
			return nil, err
		}
		g.AgentURL = proxy + image.AgentDownload(cfg.Arch)
		userData, err := image.UserData(g)
		if err != nil {
			return nil, err
		}
		m, err := New(b.Client, spec, userData, image.NetworkConfig(g.MAC), b.Dial)
		if err != nil {
			return nil, err
		}
		if b.Poll > 0 {
			m.Poll = b.Poll
		}
		m.relay = &relay{b: b, ns: spec.Namespace, baseURL: relayURL}
		return m, nil
	}, nil
}

// clusterWait bounds the API server's answers before a VM is made.
const clusterWait = 30 * time.Second

// egressProxy is the Service of the namespace's egress proxy, once both
// it and the sandboxes' NetworkPolicy are there and cowork's.
func (b Backend) egressProxy(ctx context.Context, ns, name string) (*corev1.Service, error) {
	deploy := fmt.Sprintf("deploy it first: `%s egress --namespace %s --image IMAGE | kubectl apply -f -`", instance.KubeVirtHostd, ns)
	pol, err := b.Client.Resource(networkPolicyResource).Namespace(ns).Get(ctx, SandboxPolicyName, metav1.GetOptions{})
	switch {
	case apierrors.IsNotFound(err):
		return nil, fmt.Errorf("namespace %s has no NetworkPolicy %s, which keeps sandboxes to the auditing proxy; %s", ns, SandboxPolicyName, deploy)
	case err != nil:
		return nil, fmt.Errorf("read NetworkPolicy %s/%s: %w", ns, SandboxPolicyName, err)
	case pol.GetLabels()[LabelManagedBy] != managedBy:
		return nil, fmt.Errorf("NetworkPolicy %s/%s is not cowork's (no %s=%s label); cowork runs no sandbox behind a policy it did not make", ns, SandboxPolicyName, LabelManagedBy, managedBy)
	}
	u, err := b.Client.Resource(serviceResource).Namespace(ns).Get(ctx, EgressName, metav1.GetOptions{})
	switch {
	case apierrors.IsNotFound(err):
		return nil, fmt.Errorf("namespace %s has no egress proxy (Service %s); %s", ns, EgressName, deploy)
	case err != nil:
		return nil, fmt.Errorf("read Service %s/%s: %w", ns, EgressName, err)
	case u.GetLabels()[LabelManagedBy] != managedBy:
		return nil, fmt.Errorf("the Service %s/%s is not cowork's (no %s=%s label); cowork sends no guest through a proxy it did not make", ns, EgressName, LabelManagedBy, managedBy)
	}
	var typedPol networkingv1.NetworkPolicy
	if err := runtime.DefaultUnstructuredConverter.FromUnstructured(pol.Object, &typedPol); err != nil {
		return nil, fmt.Errorf("read NetworkPolicy %s/%s: %w", ns, SandboxPolicyName, err)
	}
	var svc corev1.Service
	if err := runtime.DefaultUnstructuredConverter.FromUnstructured(u.Object, &svc); err != nil {
		return nil, fmt.Errorf("read Service %s/%s: %w", ns, EgressName, err)
	}
	if err := b.checkWall(ctx, ns, name, &typedPol, &svc); err != nil {
		return nil, err
	}
	if _, err := ProxyURL(&svc); err != nil {
		return nil, err
	}
	return &svc, nil
}

// Delete removes the kubevirt instance cfg's objects from the cluster
// (its VM, with its disk, and its seed Secret); none there is no error.
func (b Backend) Delete(ctx context.Context, cfg *instance.Config) error {
	spec, err := SpecFor(cfg)
	if err != nil {
		return err
	}
	m, err := New(b.Client, spec, nil, nil, b.Dial)
	if err != nil {
		return err
	}
	return m.Delete(ctx)
}
