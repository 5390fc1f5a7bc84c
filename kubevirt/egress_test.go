package kubevirt

import (
	"bytes"
	"encoding/json"
	"slices"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/client-go/applyconfigurations"
	"k8s.io/client-go/kubernetes/scheme"

	"github.com/coworkhq/cowork/hostd/netstack/policy"
)

func testEgress() EgressSpec {
	return EgressSpec{Namespace: "sandboxes", Image: "registry.example/cowork:dev", AuditSize: 1 << 30,
		Policy:       policy.Policy{Mode: "allowlist", Allow: []string{"*.debian.org", "github.com"}, Deny: []string{"gist.github.com"}},
		ClusterCIDRs: []string{"10.244.0.0/16", "10.96.0.0/12", "fd00:10:244::/56"}}
}

// egressObjects builds testEgress's objects, by kind.
func egressObjects(t *testing.T) (np map[string]*networkingv1.NetworkPolicy, cm *corev1.ConfigMap, pvc *corev1.PersistentVolumeClaim, d *appsv1.Deployment, svc *corev1.Service) {
	t.Helper()
	objs, err := Egress(testEgress())
	if err != nil {
		t.Fatal(err)
	}
	np = map[string]*networkingv1.NetworkPolicy{}
	for i, o := range objs {
		switch o := o.(type) {
		case *networkingv1.NetworkPolicy:
			if i > 2 {
				t.Errorf("NetworkPolicy %s comes after what it guards", o.Name)
			}
			np[o.Name] = o
		case *corev1.ConfigMap:
			cm = o
		case *corev1.PersistentVolumeClaim:
			pvc = o
		case *appsv1.Deployment:
			d = o
		case *corev1.Service:
			svc = o
		default:
			t.Fatalf("an object of kind %T", o)
		}
	}
	if len(np) != 3 || cm == nil || pvc == nil || d == nil || svc == nil {
		t.Fatalf("objects: %d policies, %v %v %v %v", len(np), cm != nil, pvc != nil, d != nil, svc != nil)
	}
	return
}

// Every object fits Kubernetes' own schema for its kind (the structured
// schema client-go's apply configurations are generated from): no field
// the API server would drop or refuse.
func TestEgressMatchesKubernetesSchema(t *testing.T) {
	objs, err := Egress(testEgress())
	if err != nil {
		t.Fatal(err)
	}
	tc := applyconfigurations.NewTypeConverter(scheme.Scheme)
	for _, o := range objs {
		if _, err := tc.ObjectToTyped(o); err != nil {
			t.Errorf("%T: %v", o, err)
		}
		if o.GetObjectKind().GroupVersionKind().Kind == "" {
			t.Errorf("%T has no kind", o)
		}
	}
	// The converter does check: a field of the wrong type fails.
	bad := &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": "apps/v1", "kind": "Deployment",
		"metadata": map[string]any{"name": "x"},
		"spec":     map[string]any{"replicas": "one"},
	}}
	if _, err := tc.ObjectToTyped(bad); err == nil {
		t.Error("a Deployment with replicas \"one\" fit the schema")
	}
}

// The sandboxes' pods reach the proxy's port and nothing else, take no
// connection, and the proxy takes connections from them only: each
// selector is checked against the labels the objects really carry (a
// sandbox's pod has its VM template's labels).
func TestEgressIsTheSandboxesOnlyWayOut(t *testing.T) {
	np, _, _, d, svc := egressObjects(t)
	vm, err := VirtualMachine(testSpec())
	if err != nil {
		t.Fatal(err)
	}
	sandboxPod := labels.Set(vm.Spec.Template.ObjectMeta.Labels)
	proxyPod := labels.Set(d.Spec.Template.ObjectMeta.Labels)
	selects := func(sel *metav1.LabelSelector, l labels.Set) bool {
		s, err := metav1.LabelSelectorAsSelector(sel)
		if err != nil {
			t.Fatal(err)
		}
		return s.Matches(l)
	}

	sb := np[SandboxPolicyName]
	if sb == nil || !selects(&sb.Spec.PodSelector, sandboxPod) || selects(&sb.Spec.PodSelector, proxyPod) {
		t.Fatalf("the sandboxes' policy does not select a sandbox's pod alone: %+v", sb)
	}
	if !slices.Contains(sb.Spec.PolicyTypes, networkingv1.PolicyTypeEgress) || !slices.Contains(sb.Spec.PolicyTypes, networkingv1.PolicyTypeIngress) || len(sb.Spec.Ingress) != 0 {
		t.Errorf("the sandboxes' policy must deny all ingress and confine egress: types %v, ingress %+v", sb.Spec.PolicyTypes, sb.Spec.Ingress)
	}
	if len(sb.Spec.Egress) != 1 {
		t.Fatalf("the sandboxes' egress rules: %+v", sb.Spec.Egress)
	}
	rule := sb.Spec.Egress[0]
	if len(rule.To) != 1 || rule.To[0].IPBlock != nil || rule.To[0].NamespaceSelector != nil || !selects(rule.To[0].PodSelector, proxyPod) || selects(rule.To[0].PodSelector, sandboxPod) {
		t.Errorf("the sandboxes may send to more than the proxy: %+v", rule.To)
	}
	// The proxy's port and the relay's, nothing else of its pod (not the
	// sessions port, where the key's sessions are opened, nor the log's,
	// where every sandbox's traffic is read).
	if len(rule.Ports) != 2 || rule.Ports[0].Port.IntValue() != EgressPort || rule.Ports[1].Port.IntValue() != RelayPort ||
		*rule.Ports[0].Protocol != corev1.ProtocolTCP || *rule.Ports[1].Protocol != corev1.ProtocolTCP || rule.Ports[0].EndPort != nil || rule.Ports[1].EndPort != nil {
		t.Errorf("the sandboxes' egress ports: %+v", rule.Ports)
	}

	pp := np[EgressName+"-ingress"]
	if pp == nil || !selects(&pp.Spec.PodSelector, proxyPod) || len(pp.Spec.Ingress) != 1 {
		t.Fatalf("the proxy's policy: %+v", pp)
	}
	if ports := pp.Spec.Ingress[0].Ports; len(ports) != 2 || ports[0].Port.IntValue() != EgressPort || ports[1].Port.IntValue() != RelayPort || ports[0].EndPort != nil || ports[1].EndPort != nil {
		t.Errorf("the proxy's pod takes connections on %+v, want the proxy's and the relay's ports", ports)
	}
	from := pp.Spec.Ingress[0].From
	if len(from) != 1 || from[0].PodSelector == nil || !selects(from[0].PodSelector, sandboxPod) || selects(from[0].PodSelector, proxyPod) || from[0].IPBlock != nil {
		t.Errorf("the proxy takes connections from more than the sandboxes: %+v", from)
	}

	// The Service reaches the proxy's pod on the port it serves.
	if !labels.SelectorFromSet(svc.Spec.Selector).Matches(proxyPod) || labels.SelectorFromSet(svc.Spec.Selector).Matches(sandboxPod) {
		t.Errorf("the Service selects %v", svc.Spec.Selector)
	}
	c := d.Spec.Template.Spec.Containers[0]
	if len(svc.Spec.Ports) != 2 || len(c.Ports) != 2 || svc.Spec.Ports[0].TargetPort.IntValue() != int(c.Ports[0].ContainerPort) || svc.Spec.Ports[0].Port != EgressPort ||
		svc.Spec.Ports[1].TargetPort.IntValue() != int(c.Ports[1].ContainerPort) || svc.Spec.Ports[1].Port != RelayPort {
		t.Errorf("the Service's ports %+v against the container's %+v", svc.Spec.Ports, c.Ports)
	}
	if got, _ := RelayURL(svc); got != "" {
		t.Errorf("a relay URL for a Service with no cluster IP yet: %s", got)
	}
	if _, err := ProxyURL(svc); err == nil {
		t.Error("a proxy URL for a Service with no cluster IP yet")
	}
	svc.Spec.ClusterIP = "10.96.12.34"
	if got, err := ProxyURL(svc); got != "http://10.96.12.34:7890" || err != nil {
		t.Errorf("ProxyURL %s, %v", got, err)
	}
	if got, err := RelayURL(svc); got != "http://10.96.12.34:7891" || err != nil {
		t.Errorf("RelayURL %s, %v", got, err)
	}
	svc.Spec.ClusterIP = "fd00:10:96::1234"
	if got, _ := ProxyURL(svc); got != "http://[fd00:10:96::1234]:7890" {
		t.Errorf("ProxyURL of an IPv6 service: %s", got)
	}
}

// The proxy's pod runs `cowork-hostd egress` with the policy from its
// ConfigMap, as it was given, and its audit log on its own volume; one
// pod at a time writes it; it runs as no root, with nothing to escalate
// and no API token.
func TestEgressDeployment(t *testing.T) {
	_, cm, pvc, d, _ := egressObjects(t)
	spec := d.Spec.Template.Spec
	c := spec.Containers[0]
	want := []string{"cowork-hostd", "egress", "--listen", ":7890", "--policy", "/etc/cowork/policy.json", "--audit", "/var/lib/cowork/audit", "--audit-size", "805306368",
		"--relay-listen", ":7891", "--sessions-listen", "127.0.0.1:7892", "--log-listen", "127.0.0.1:7893", "--api-key-file", "/etc/cowork-api-key/api-key", "--api-key-secret", "cowork-api-key"}
	if !slices.Equal(c.Command, want) {
		t.Errorf("command %q, want %q", c.Command, want)
	}
	var p policy.Policy
	dec := json.NewDecoder(bytes.NewReader([]byte(cm.Data["policy.json"])))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&p); err != nil || p.Mode != "allowlist" || !slices.Equal(p.Allow, testEgress().Policy.Allow) || !slices.Equal(p.Deny, testEgress().Policy.Deny) {
		t.Errorf("the ConfigMap's policy %q: %+v, %v", cm.Data["policy.json"], p, err)
	}
	mounts := map[string]corev1.VolumeMount{}
	for _, m := range c.VolumeMounts {
		mounts[m.Name] = m
	}
	vols := map[string]corev1.Volume{}
	for _, v := range spec.Volumes {
		vols[v.Name] = v
	}
	if m, v := mounts["policy"], vols["policy"]; m.MountPath != "/etc/cowork" || !m.ReadOnly || v.ConfigMap == nil || v.ConfigMap.Name != cm.Name {
		t.Errorf("the policy's mount %+v and volume %+v", m, v)
	}
	if m, v := mounts["audit"], vols["audit"]; m.MountPath != "/var/lib/cowork/audit" || m.ReadOnly || v.PersistentVolumeClaim == nil || v.PersistentVolumeClaim.ClaimName != pvc.Name {
		t.Errorf("the audit log's mount %+v and volume %+v", m, v)
	}
	// The key: the Secret's, read-only, optional (a namespace without it
	// runs the proxy, whose sessions then name the Secret to make).
	if m, v := mounts["api-key"], vols["api-key"]; m.MountPath != "/etc/cowork-api-key" || !m.ReadOnly || v.Secret == nil || v.Secret.SecretName != "cowork-api-key" ||
		v.Secret.Optional == nil || !*v.Secret.Optional || len(v.Secret.Items) != 1 || v.Secret.Items[0].Key != "api-key" || *v.Secret.DefaultMode&0o007 != 0 {
		t.Errorf("the API key's mount %+v and volume %+v", m, v)
	}
	if *d.Spec.Replicas != 1 || d.Spec.Strategy.Type != appsv1.RecreateDeploymentStrategyType {
		t.Errorf("replicas %d, strategy %s: a second writer would fork the audit chain", *d.Spec.Replicas, d.Spec.Strategy.Type)
	}
	sc, psc := c.SecurityContext, spec.SecurityContext
	if !*psc.RunAsNonRoot || *sc.AllowPrivilegeEscalation || !*sc.ReadOnlyRootFilesystem || !slices.Equal(sc.Capabilities.Drop, []corev1.Capability{"ALL"}) || *spec.AutomountServiceAccountToken {
		t.Errorf("the proxy's pod is not confined: pod %+v, container %+v, token %v", psc, sc, *spec.AutomountServiceAccountToken)
	}
}

// A spec the proxy cannot serve is refused, naming the problem.
func TestEgressSpecRefusesWhatItCannotServe(t *testing.T) {
	for _, c := range []struct {
		change func(*EgressSpec)
		want   string
	}{
		{func(s *EgressSpec) { s.Namespace = "" }, "namespace"},
		{func(s *EgressSpec) { s.Namespace = "Bad_NS" }, "namespace"},
		{func(s *EgressSpec) { s.Image = "" }, "image"},
		{func(s *EgressSpec) { s.Policy.HostPorts = []int{22} }, "host ports"},
		{func(s *EgressSpec) { s.Policy.Budget = &policy.Budget{DailyTokens: 5} }, "budget"},
		{func(s *EgressSpec) { s.AuditSize = 1 << 20 }, "audit volume"},
		{func(s *EgressSpec) { s.APIKeySecret = "Bad/Name" }, "Secret name"},
	} {
		s := testEgress()
		c.change(&s)
		if _, err := Egress(s); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%+v: %v, want an error naming %q", s, err, c.want)
		}
	}
}

// Given the cluster's ranges, the proxy's own pod may reach anywhere but
// them, link-local addresses and Azure's platform endpoint, and the
// cluster's DNS; not given, there is no such policy (and the proxy's own
// refusal of private addresses is the only wall).
func TestEgressKeepsTheProxyOutOfTheCluster(t *testing.T) {
	np, _, _, d, _ := egressObjects(t)
	pe := np[EgressName+"-egress"]
	if pe == nil {
		t.Fatal("no egress policy for the proxy's pod")
	}
	proxyPod := labels.Set(d.Spec.Template.ObjectMeta.Labels)
	if s, _ := metav1.LabelSelectorAsSelector(&pe.Spec.PodSelector); !s.Matches(proxyPod) || !slices.Equal(pe.Spec.PolicyTypes, []networkingv1.PolicyType{networkingv1.PolicyTypeEgress}) {
		t.Errorf("the proxy's egress policy selects %v, types %v", pe.Spec.PodSelector, pe.Spec.PolicyTypes)
	}
	var v4, v6 *networkingv1.IPBlock
	for _, p := range pe.Spec.Egress[0].To {
		switch p.IPBlock.CIDR {
		case "0.0.0.0/0":
			v4 = p.IPBlock
		case "::/0":
			v6 = p.IPBlock
		}
	}
	if v4 == nil || v6 == nil {
		t.Fatalf("the proxy's egress: %+v", pe.Spec.Egress[0].To)
	}
	for _, c := range []string{"10.244.0.0/16", "10.96.0.0/12", "169.254.0.0/16", "168.63.129.16/32"} {
		if !slices.Contains(v4.Except, c) {
			t.Errorf("the proxy's pod may reach %s: except %v", c, v4.Except)
		}
	}
	if !slices.Contains(v6.Except, "fd00:10:244::/56") || !slices.Contains(v6.Except, "fe80::/10") {
		t.Errorf("the proxy's pod may reach the cluster's IPv6 range: except %v", v6.Except)
	}
	dns := pe.Spec.Egress[1]
	if len(dns.To) != 1 || dns.To[0].NamespaceSelector == nil || dns.To[0].PodSelector.MatchLabels["k8s-app"] != "kube-dns" || len(dns.Ports) != 2 || dns.Ports[0].Port.IntValue() != 53 {
		t.Errorf("the proxy's DNS rule: %+v", dns)
	}

	s := testEgress()
	s.ClusterCIDRs = nil
	objs, err := Egress(s)
	if err != nil {
		t.Fatal(err)
	}
	for _, o := range objs {
		if p, ok := o.(*networkingv1.NetworkPolicy); ok && p.Name == EgressName+"-egress" {
			t.Error("an egress policy for the proxy without the cluster's ranges")
		}
	}
	for _, bad := range []string{"10.96.0.1/12", "not-a-cidr"} {
		s.ClusterCIDRs = []string{bad}
		if _, err := Egress(s); err == nil || !strings.Contains(err.Error(), "cluster CIDR") {
			t.Errorf("cluster CIDR %q: %v", bad, err)
		}
	}
}
