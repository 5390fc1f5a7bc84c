package instance

import (
	"errors"
	"fmt"
	"regexp"

	"github.com/coworkhq/cowork/internal/termsafe"
)

// Backends: where an instance's guest runs. The empty one is this
// machine's hypervisor (QEMU on Linux, Virtualization.framework on a
// Mac); BackendKubeVirt is a Kubernetes cluster through KubeVirt, run by
// the cowork-hostd-kubevirt binary (the kubevirt module), which links the
// cluster's client libraries the other two binaries never do.
const (
	BackendLocal    = ""
	BackendKubeVirt = "kubevirt"
)

// KubeVirtHostd is the daemon binary of a kubevirt instance.
const KubeVirtHostd = "cowork-hostd-kubevirt"

// Cluster is where a kubevirt instance's guest runs.
type Cluster struct {
	// Context is the kubeconfig context to reach the cluster with
	// (`--context`); empty is the kubeconfig's current one.
	Context string `json:"context,omitempty"`
	// Namespace holds the instance's VM, its seed Secret and the
	// namespace's egress proxy (`--namespace`).
	Namespace string `json:"namespace"`
	// Image is the guest image as a container disk reference, e.g.
	// quay.io/containerdisks/ubuntu:22.04 (`--image`).
	Image string `json:"image"`
	// CloneOf names the instance whose root disk this one's is cloned
	// from, in the same namespace (a throwaway run's clone: the parent
	// was provisioned once, and its clones start from what it installed);
	// empty for an instance whose disk is made from Image.
	CloneOf string `json:"clone_of,omitempty"`
}

// DefaultNamespace is a kubevirt instance's namespace when --namespace
// is not given.
const DefaultNamespace = "cowork"

// kubeNameRE is what Kubernetes takes as a namespace (RFC 1123 label).
var kubeNameRE = regexp.MustCompile(`^[a-z0-9]([-a-z0-9]*[a-z0-9])?$`)

// imageRefRE is a container image reference, roughly: no scheme, no
// spaces, a name with an optional registry, tag and digest.
var imageRefRE = regexp.MustCompile(`^[a-z0-9]+([._-][a-z0-9]+)*(:[0-9]+)?(/[a-z0-9]+([._-][a-z0-9]+)*)*(:[A-Za-z0-9_][A-Za-z0-9_.-]{0,127})?(@sha256:[a-f0-9]{64})?$`)

// Remote says whether the guest runs somewhere other than this machine.
func (c *Config) Remote() bool { return c.Backend != BackendLocal }

// validateBackend checks the backend and, for a cluster, where it is.
func (c *Config) validateBackend() []error {
	switch c.Backend {
	case BackendLocal:
		if c.Cluster != nil {
			return []error{errors.New("cluster settings (--context, --namespace) need --backend kubevirt")}
		}
		return nil
	case BackendKubeVirt:
	default:
		return []error{fmt.Errorf("--backend %q: want local or kubevirt", c.Backend)}
	}
	var errs []error
	k := c.Cluster
	if k == nil {
		return []error{errors.New("--backend kubevirt: no cluster settings; give --namespace and --image (a container disk, e.g. quay.io/containerdisks/ubuntu:22.04)")}
	}
	if !kubeNameRE.MatchString(k.Namespace) || len(k.Namespace) > 63 {
		errs = append(errs, fmt.Errorf("--namespace %q: want a Kubernetes namespace name (lowercase letters, digits and dashes, at most 63)", k.Namespace))
	}
	if len(c.Name) > 40 || !kubeNameRE.MatchString(c.Name) {
		errs = append(errs, fmt.Errorf("instance name %q cannot name a Kubernetes object: on a cluster use at most 40 lowercase letters, digits and dashes", c.Name))
	}
	if len(k.Context) > 253 || !termsafe.Safe(k.Context, false) {
		errs = append(errs, fmt.Errorf("--context %q: not a kubeconfig context name", k.Context))
	}
	if len(k.Image) > 512 || !imageRefRE.MatchString(k.Image) {
		errs = append(errs, fmt.Errorf("--image %q: on a cluster the image is a container disk reference, e.g. quay.io/containerdisks/ubuntu:22.04", k.Image))
	}
	if k.CloneOf != "" && (len(k.CloneOf) > 40 || !kubeNameRE.MatchString(k.CloneOf) || k.CloneOf == c.Name) {
		errs = append(errs, fmt.Errorf("clone_of %q: want the name of another instance on the cluster (at most 40 lowercase letters, digits and dashes)", k.CloneOf))
	}
	if len(c.Mounts) > 0 {
		errs = append(errs, errors.New("--mount: a cluster's guest cannot mount this machine's folders"))
	}
	if c.DiskFormat != "" || c.Golden != "" {
		errs = append(errs, errors.New("a kubevirt instance keeps no local disk (its disk is a DataVolume in the cluster)"))
	}
	return errs
}
