package kubevirt

import (
	"context"
	"fmt"
	"maps"
	"strings"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"
)

// The wall around a namespace's sandboxes is what Egress makes: its
// sandboxes' NetworkPolicy (their only way out is the proxy's port) and
// the proxy's Service. Before a guest runs, egressProxy checks that both
// are as Egress makes them, not only labelled so, and that no other
// NetworkPolicy of the namespace lets traffic in or out of the
// sandboxes' pods: NetworkPolicies add up, and one more allow rule
// would open the wall. Whoever can edit the namespace can still open it
// (a pod wearing the proxy's labels, a policy made after the start) and
// cluster-wide policies are not looked at: the namespace is the trust
// boundary (SECURITY.md).

// wantedEgress is the sandboxes' NetworkPolicy and the proxy's Service
// of namespace ns, as Egress makes them.
func wantedEgress(ns string) (*networkingv1.NetworkPolicy, *corev1.Service, error) {
	objs, err := Egress(EgressSpec{Namespace: ns, Image: "any", AuditSize: 64 << 20})
	if err != nil {
		return nil, nil, err
	}
	var pol *networkingv1.NetworkPolicy
	var svc *corev1.Service
	for _, o := range objs {
		switch o := o.(type) {
		case *networkingv1.NetworkPolicy:
			if o.Name == SandboxPolicyName {
				pol = o
			}
		case *corev1.Service:
			svc = o
		}
	}
	return pol, svc, nil
}

// checkWall refuses the namespace's egress objects (the live sandboxes'
// policy and the proxy's Service) unless they are as Egress makes them,
// and refuses any other NetworkPolicy that may select the pod of
// instance's VM with a rule of its own.
func (b Backend) checkWall(ctx context.Context, ns, instance string, gotPol *networkingv1.NetworkPolicy, gotSvc *corev1.Service) error {
	pol, svc, err := wantedEgress(ns)
	if err != nil {
		return err
	}
	redeploy := fmt.Sprintf("deploy it again with `cowork-hostd-kubevirt egress --namespace %s ... | kubectl apply -f -`", ns)
	if !equality.Semantic.DeepEqual(gotPol.Spec, pol.Spec) {
		return fmt.Errorf("NetworkPolicy %s/%s is not the one this cowork makes (it was changed, or made by another version), so the sandboxes' way out may not be only the proxy; %s", ns, SandboxPolicyName, redeploy)
	}
	if !maps.Equal(gotSvc.Spec.Selector, svc.Spec.Selector) || !samePorts(gotSvc.Spec.Ports, svc.Spec.Ports) {
		return fmt.Errorf("the Service %s/%s does not lead to cowork's proxy as this cowork makes it (its selector or ports were changed, or another version made it); %s", ns, EgressName, redeploy)
	}
	list, err := b.Client.Resource(networkPolicyResource).Namespace(ns).List(ctx, metav1.ListOptions{})
	if err != nil && !apierrors.IsNotFound(err) {
		return fmt.Errorf("list the NetworkPolicies of %s: %w", ns, err)
	}
	if list == nil {
		return nil
	}
	pod := sandboxPodLabels(instance)
	for _, u := range list.Items {
		if u.GetName() == SandboxPolicyName {
			continue
		}
		var p networkingv1.NetworkPolicy
		if err := runtime.DefaultUnstructuredConverter.FromUnstructured(u.Object, &p); err != nil {
			return fmt.Errorf("read NetworkPolicy %s/%s: %w", ns, u.GetName(), err)
		}
		if hasRules(p.Spec) && maySelect(p.Spec.PodSelector, pod) {
			return fmt.Errorf("NetworkPolicy %s/%s may apply to the sandbox's pod and has rules of its own, which would let it past the proxy (NetworkPolicies add up); narrow its podSelector, or run sandboxes in a namespace of their own", ns, u.GetName())
		}
	}
	return nil
}

// hasRules says whether spec lets anything in or out: rules of a type its
// policyTypes names (none named: Ingress, and Egress when it has egress
// rules, as the API server defaults them). A type named with no rules
// only denies.
func hasRules(spec networkingv1.NetworkPolicySpec) bool {
	types := spec.PolicyTypes
	if len(types) == 0 {
		types = []networkingv1.PolicyType{networkingv1.PolicyTypeIngress}
		if len(spec.Egress) > 0 {
			types = append(types, networkingv1.PolicyTypeEgress)
		}
	}
	for _, t := range types {
		if t == networkingv1.PolicyTypeIngress && len(spec.Ingress) > 0 || t == networkingv1.PolicyTypeEgress && len(spec.Egress) > 0 {
			return true
		}
	}
	return false
}

// sandboxPodLabels are the labels of instance's virt-launcher pod that
// cowork knows: its VM template's, and KubeVirt's own that say what the
// pod is. A label a mutating webhook adds (a service mesh's) is not
// known: a policy selecting by it is not seen (SECURITY.md).
func sandboxPodLabels(instance string) labels.Set {
	s := Spec{Instance: instance}
	set := labels.Set(s.labels())
	set["kubevirt.io"] = "virt-launcher"
	set["vm.kubevirt.io/name"] = s.Name()
	return set
}

// maySelect says whether sel may select a pod labelled pod: it does, or
// it asks for a label of KubeVirt's that cowork does not know the value
// of (their values are KubeVirt's to give), which is taken as yes.
func maySelect(sel metav1.LabelSelector, pod labels.Set) bool {
	keys := make([]string, 0, len(sel.MatchLabels)+len(sel.MatchExpressions))
	for k := range sel.MatchLabels {
		keys = append(keys, k)
	}
	for _, e := range sel.MatchExpressions {
		keys = append(keys, e.Key)
	}
	for _, k := range keys {
		if strings.Contains(k, "kubevirt.io") && !pod.Has(k) {
			return true
		}
	}
	s, err := metav1.LabelSelectorAsSelector(&sel)
	if err != nil {
		return true // a selector the API server took but this cannot read
	}
	return s.Matches(pod)
}

// samePorts compares Service ports as cowork sets them (name, port,
// target port, protocol), whatever the API server added.
func samePorts(got, want []corev1.ServicePort) bool {
	if len(got) != len(want) {
		return false
	}
	for i := range got {
		g, w := got[i], want[i]
		if g.Name != w.Name || g.Port != w.Port || g.TargetPort != w.TargetPort || g.Protocol != w.Protocol {
			return false
		}
	}
	return true
}
