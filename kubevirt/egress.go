package kubevirt

import (
	"encoding/json"
	"fmt"
	"net"
	"net/netip"
	"net/url"
	"strconv"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/coworkhq/cowork/hostd/netstack/policy"
	"github.com/coworkhq/cowork/internal/termsafe"
)

// A namespace's egress: the only way out for its sandboxes' guests is
// cowork's auditing proxy (`cowork-hostd egress`), a Deployment of one
// pod in the namespace, whose audit log is on a volume of its own. Two
// NetworkPolicies make it so: the sandboxes' pods (every pod with the
// instance label, which KubeVirt copies from the VM's template to its
// virt-launcher pod) may send to the proxy's port and nowhere else, not
// even the cluster's DNS (the proxy resolves), and take no connection
// (the agent is reached over vsock, through the API server); the proxy's
// pod takes connections from them only. See docs/scale-out.md.

// EgressName names the proxy's objects: its Deployment, Service, policy
// ConfigMap, audit volume claim, and its NetworkPolicies
// (EgressName+"-ingress", and "-egress" given the cluster's CIDRs);
// SandboxPolicyName is the sandboxes'.
const (
	EgressName        = "cowork-egress"
	SandboxPolicyName = "cowork-sandboxes"
	// EgressPort is the proxy's port: the local gateway's proxy port, so
	// that a guest's proxy settings differ only in the host.
	EgressPort = 7890
	// RelayPort is the credential relay's port in the proxy's pod: the
	// local gateway's relay port (netstack.RelayPort).
	RelayPort = 7891
	// SessionsPort is where the relay's sessions are opened, on the
	// pod's loopback only: the API server's pods/portforward reaches it
	// (for a caller whose RBAC allows that), the guests never do.
	SessionsPort = 7892
	// LogPort is where the audit log is served, read-only, on the pod's
	// loopback only, as the sessions are: `cowork proxy` reads it
	// through the API server's pods/portforward (EgressLog).
	LogPort = 7893
	// DefaultAPIKeySecret is the Secret whose "api-key" is the relay's
	// API key (egressrelay.DefaultSecret).
	DefaultAPIKeySecret = "cowork-api-key"
	// LabelComponent marks the proxy's pods, for its Service and the
	// sandboxes' NetworkPolicy.
	LabelComponent  = "app.kubernetes.io/component"
	egressComponent = "egress-proxy"
	egressConfigDir = "/etc/cowork"
	egressAuditDir  = "/var/lib/cowork/audit"
	egressKeyDir    = "/etc/cowork-api-key"
)

// EgressSpec is what a namespace's egress proxy is made from.
type EgressSpec struct {
	Namespace string
	// Image is a container image with cowork-hostd on its PATH, of the
	// same build as the CLI.
	Image string
	// Policy is the sandboxes' network policy, as `cowork policy` keeps
	// it locally: no host ports (the proxy reaches nothing of its own
	// pod) and no daily budget (the relay's ledger is its pod's, not the
	// namespace's: a new pod would start the day again).
	Policy policy.Policy
	// APIKeySecret names the Secret whose "api-key" the relay sends
	// ("": DefaultAPIKeySecret). It is mounted into the proxy's pod
	// alone, optional: a namespace without it runs the proxy, and its
	// sessions are refused naming the Secret to make.
	APIKeySecret string
	// APIEndpoint is where the relay sends that key ("": Anthropic's
	// API): an https URL, the only one the sessions may name.
	APIEndpoint string
	// AuditSize is the size of the audit log's volume (bytes).
	AuditSize int64
	// ClusterCIDRs are the cluster's own ranges (pods, services, nodes),
	// which only the cluster knows. Given, a third NetworkPolicy keeps the
	// proxy's own pod from reaching them (and link-local addresses), but
	// for the cluster's DNS: a second wall behind the proxy's refusal of
	// every private address.
	ClusterCIDRs []string
}

// endpointArgs are the proxy's arguments for s.APIEndpoint, none for
// the default.
func (s EgressSpec) endpointArgs() []string {
	if s.APIEndpoint == "" {
		return nil
	}
	return []string{"--api-endpoint", s.APIEndpoint}
}

// checkEndpoint refuses an API endpoint the relay should not send a key
// to: anything but an https URL of a host, or one carrying a user, a
// query or a fragment (the key goes in the request's header, nowhere
// else).
func checkEndpoint(e string) error {
	u, err := url.Parse(e)
	switch {
	case len(e) > 2048 || err != nil || !termsafe.Safe(e, false):
		return fmt.Errorf("--api-endpoint: not a URL; want https://HOST[/PATH], e.g. https://api.anthropic.com")
	case u.Scheme != "https" || u.Host == "":
		return fmt.Errorf("--api-endpoint %s: want an https URL of a host: the relay sends the API key there", policy.RedactURL(e))
	case u.User != nil || u.RawQuery != "" || u.Fragment != "" || u.Opaque != "":
		return fmt.Errorf("--api-endpoint %s: want https://HOST[/PATH], without a user, query or fragment", policy.RedactURL(e))
	}
	return nil
}

// Check says what is wrong with s.
func (s EgressSpec) Check() error {
	switch {
	case s.Namespace == "" || !nameRE.MatchString(s.Namespace) || len(s.Namespace) > 63:
		return fmt.Errorf("--namespace %q is not a Kubernetes namespace name", s.Namespace)
	case s.Image == "":
		return fmt.Errorf("no proxy image: name a container image with cowork-hostd (of this build) on its PATH")
	case len(s.Policy.HostPorts) > 0:
		return fmt.Errorf("the policy exposes host ports: the cluster's proxy reaches nothing of its own pod; remove them")
	case s.Policy.Budget != nil:
		return fmt.Errorf("the policy has a daily budget: the cluster's relay keeps no namespace-wide ledger to count it (a session's own budget works); remove it")
	case s.APIKeySecret != "" && (!nameRE.MatchString(s.APIKeySecret) || len(s.APIKeySecret) > 253):
		return fmt.Errorf("--api-key-secret %q is not a Kubernetes Secret name", s.APIKeySecret)
	case s.AuditSize < 64<<20:
		return fmt.Errorf("audit volume of %d bytes: want at least 64 MiB", s.AuditSize)
	case s.APIEndpoint != "":
		if err := checkEndpoint(s.APIEndpoint); err != nil {
			return err
		}
	}
	for _, c := range s.ClusterCIDRs {
		if p, err := netip.ParsePrefix(c); err != nil || p != p.Masked() {
			return fmt.Errorf("cluster CIDR %q: want a range such as 10.96.0.0/12, its host bits zero", c)
		}
	}
	return nil
}

// proxyEgress is the NetworkPolicy on the proxy's own pod: anywhere but
// the cluster's ranges, link-local addresses and Azure's platform
// endpoint, and the cluster's DNS (kube-dns in kube-system, as kubeadm,
// kind and the managed clusters label it).
func (s EgressSpec) proxyEgress(meta metav1.ObjectMeta) *networkingv1.NetworkPolicy {
	v4 := []string{"169.254.0.0/16", "168.63.129.16/32"}
	v6 := []string{"fe80::/10"}
	for _, c := range s.ClusterCIDRs {
		if netip.MustParsePrefix(c).Addr().Is4() {
			v4 = append(v4, c)
		} else {
			v6 = append(v6, c)
		}
	}
	udp, tcp := corev1.ProtocolUDP, corev1.ProtocolTCP
	dns := intstr.FromInt32(53)
	return &networkingv1.NetworkPolicy{
		TypeMeta:   metav1.TypeMeta{APIVersion: "networking.k8s.io/v1", Kind: "NetworkPolicy"},
		ObjectMeta: meta,
		Spec: networkingv1.NetworkPolicySpec{
			PodSelector: metav1.LabelSelector{MatchLabels: egressLabels()},
			PolicyTypes: []networkingv1.PolicyType{networkingv1.PolicyTypeEgress},
			Egress: []networkingv1.NetworkPolicyEgressRule{
				{To: []networkingv1.NetworkPolicyPeer{
					{IPBlock: &networkingv1.IPBlock{CIDR: "0.0.0.0/0", Except: v4}},
					{IPBlock: &networkingv1.IPBlock{CIDR: "::/0", Except: v6}},
				}},
				{
					To: []networkingv1.NetworkPolicyPeer{{
						NamespaceSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"kubernetes.io/metadata.name": "kube-system"}},
						PodSelector:       &metav1.LabelSelector{MatchLabels: map[string]string{"k8s-app": "kube-dns"}},
					}},
					Ports: []networkingv1.NetworkPolicyPort{{Protocol: &udp, Port: &dns}, {Protocol: &tcp, Port: &dns}},
				},
			},
		},
	}
}

func egressLabels() map[string]string {
	return map[string]string{LabelManagedBy: managedBy, LabelComponent: egressComponent}
}

// ProxyURL is what a sandbox's guest sets as its HTTP(S) proxy: the
// egress Service as created, by its cluster IP, since the guest may not
// reach the cluster's DNS (the sandboxes' NetworkPolicy) to resolve its
// name.
func ProxyURL(svc *corev1.Service) (string, error) {
	ip := svc.Spec.ClusterIP
	if ip == "" || ip == corev1.ClusterIPNone {
		return "", fmt.Errorf("service %s has no cluster IP yet: read it back after it is created", svc.Name)
	}
	return "http://" + net.JoinHostPort(ip, strconv.Itoa(EgressPort)), nil
}

// RelayURL is what a sandbox's claude gets as ANTHROPIC_BASE_URL: the
// relay in the egress proxy's pod, by the Service's cluster IP.
func RelayURL(svc *corev1.Service) (string, error) {
	if _, err := ProxyURL(svc); err != nil {
		return "", err
	}
	return "http://" + net.JoinHostPort(svc.Spec.ClusterIP, strconv.Itoa(RelayPort)), nil
}

// Egress is the namespace's egress proxy and the NetworkPolicies that
// make it the sandboxes' only way out, in the order to create them.
func Egress(s EgressSpec) ([]runtime.Object, error) {
	if err := s.Check(); err != nil {
		return nil, err
	}
	pol, err := json.Marshal(s.Policy)
	if err != nil {
		return nil, err
	}
	meta := func(name string) metav1.ObjectMeta {
		return metav1.ObjectMeta{Name: name, Namespace: s.Namespace, Labels: egressLabels()}
	}
	port, relayPort := intstr.FromInt32(EgressPort), intstr.FromInt32(RelayPort)
	tcp := corev1.ProtocolTCP
	secret := s.APIKeySecret
	if secret == "" {
		secret = DefaultAPIKeySecret
	}
	keyMode := int32(0o440)
	one, no, yes := int32(1), false, true
	uid, grace := int64(65532), int64(30)
	config := &corev1.ConfigMap{
		TypeMeta:   metav1.TypeMeta{APIVersion: "v1", Kind: "ConfigMap"},
		ObjectMeta: meta(EgressName),
		Data:       map[string]string{"policy.json": string(pol)},
	}
	claim := &corev1.PersistentVolumeClaim{
		TypeMeta:   metav1.TypeMeta{APIVersion: "v1", Kind: "PersistentVolumeClaim"},
		ObjectMeta: meta(EgressName + "-audit"),
		Spec: corev1.PersistentVolumeClaimSpec{
			AccessModes: []corev1.PersistentVolumeAccessMode{corev1.ReadWriteOnce},
			Resources: corev1.VolumeResourceRequirements{Requests: corev1.ResourceList{
				corev1.ResourceStorage: *resource.NewQuantity(s.AuditSize, resource.BinarySI),
			}},
		},
	}
	deploy := &appsv1.Deployment{
		TypeMeta:   metav1.TypeMeta{APIVersion: "apps/v1", Kind: "Deployment"},
		ObjectMeta: meta(EgressName),
		Spec: appsv1.DeploymentSpec{
			// One pod: the audit log is one chain on one volume, and a
			// second writer would fork it. Recreate, so that the old pod
			// lets go of the volume before the new one takes it.
			Replicas: &one,
			Strategy: appsv1.DeploymentStrategy{Type: appsv1.RecreateDeploymentStrategyType},
			Selector: &metav1.LabelSelector{MatchLabels: egressLabels()},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: egressLabels()},
				Spec: corev1.PodSpec{
					// The proxy writes its clients' records within 20 s of
					// SIGTERM (netstack's endWait).
					TerminationGracePeriodSeconds: &grace,
					AutomountServiceAccountToken:  &no, // it needs no API access
					SecurityContext: &corev1.PodSecurityContext{
						RunAsNonRoot: &yes, RunAsUser: &uid, FSGroup: &uid,
						SeccompProfile: &corev1.SeccompProfile{Type: corev1.SeccompProfileTypeRuntimeDefault},
					},
					Containers: []corev1.Container{{
						Name:  "egress",
						Image: s.Image,
						Command: append([]string{"cowork-hostd", "egress",
							"--listen", fmt.Sprintf(":%d", EgressPort),
							"--policy", egressConfigDir + "/policy.json",
							"--audit", egressAuditDir,
							// Rotation keeps the log within three quarters
							// of its volume.
							"--audit-size", strconv.FormatInt(s.AuditSize/4*3, 10),
							"--relay-listen", fmt.Sprintf(":%d", RelayPort),
							"--sessions-listen", fmt.Sprintf("127.0.0.1:%d", SessionsPort),
							"--log-listen", fmt.Sprintf("127.0.0.1:%d", LogPort),
							"--api-key-file", egressKeyDir + "/api-key",
							"--api-key-secret", secret},
							s.endpointArgs()...),
						Ports: []corev1.ContainerPort{
							{Name: "proxy", ContainerPort: EgressPort, Protocol: tcp},
							{Name: "relay", ContainerPort: RelayPort, Protocol: tcp},
						},
						SecurityContext: &corev1.SecurityContext{
							AllowPrivilegeEscalation: &no,
							ReadOnlyRootFilesystem:   &yes,
							Capabilities:             &corev1.Capabilities{Drop: []corev1.Capability{"ALL"}},
						},
						ReadinessProbe: &corev1.Probe{ProbeHandler: corev1.ProbeHandler{TCPSocket: &corev1.TCPSocketAction{Port: port}}},
						VolumeMounts: []corev1.VolumeMount{
							{Name: "policy", MountPath: egressConfigDir, ReadOnly: true},
							{Name: "audit", MountPath: egressAuditDir},
							{Name: "api-key", MountPath: egressKeyDir, ReadOnly: true},
						},
					}},
					Volumes: []corev1.Volume{
						{Name: "policy", VolumeSource: corev1.VolumeSource{ConfigMap: &corev1.ConfigMapVolumeSource{
							LocalObjectReference: corev1.LocalObjectReference{Name: EgressName},
						}}},
						{Name: "audit", VolumeSource: corev1.VolumeSource{PersistentVolumeClaim: &corev1.PersistentVolumeClaimVolumeSource{
							ClaimName: claim.Name,
						}}},
						// Optional: without it the proxy runs, and refuses
						// sessions naming the Secret to make.
						{Name: "api-key", VolumeSource: corev1.VolumeSource{Secret: &corev1.SecretVolumeSource{
							SecretName: secret, Optional: &yes, DefaultMode: &keyMode,
							Items: []corev1.KeyToPath{{Key: "api-key", Path: "api-key"}},
						}}},
					},
				},
			},
		},
	}
	service := &corev1.Service{
		TypeMeta:   metav1.TypeMeta{APIVersion: "v1", Kind: "Service"},
		ObjectMeta: meta(EgressName),
		Spec: corev1.ServiceSpec{
			Selector: egressLabels(),
			Ports: []corev1.ServicePort{
				{Name: "proxy", Port: EgressPort, TargetPort: port, Protocol: tcp},
				{Name: "relay", Port: RelayPort, TargetPort: relayPort, Protocol: tcp},
			},
		},
	}
	sandboxes := metav1.LabelSelector{MatchExpressions: []metav1.LabelSelectorRequirement{
		{Key: LabelInstance, Operator: metav1.LabelSelectorOpExists},
	}}
	proxyPeer := []networkingv1.NetworkPolicyPeer{{PodSelector: &metav1.LabelSelector{MatchLabels: egressLabels()}}}
	// The proxy's and the relay's ports, never the sessions' nor the
	// log's (which are on the pod's loopback besides).
	proxyPort := []networkingv1.NetworkPolicyPort{{Protocol: &tcp, Port: &port}, {Protocol: &tcp, Port: &relayPort}}
	// No ingress rule: nothing connects to a sandbox's pod.
	sandboxPolicy := &networkingv1.NetworkPolicy{
		TypeMeta:   metav1.TypeMeta{APIVersion: "networking.k8s.io/v1", Kind: "NetworkPolicy"},
		ObjectMeta: meta(SandboxPolicyName),
		Spec: networkingv1.NetworkPolicySpec{
			PodSelector: sandboxes,
			PolicyTypes: []networkingv1.PolicyType{networkingv1.PolicyTypeIngress, networkingv1.PolicyTypeEgress},
			Egress:      []networkingv1.NetworkPolicyEgressRule{{To: proxyPeer, Ports: proxyPort}},
		},
	}
	proxyPolicy := &networkingv1.NetworkPolicy{
		TypeMeta:   metav1.TypeMeta{APIVersion: "networking.k8s.io/v1", Kind: "NetworkPolicy"},
		ObjectMeta: meta(EgressName + "-ingress"),
		Spec: networkingv1.NetworkPolicySpec{
			PodSelector: metav1.LabelSelector{MatchLabels: egressLabels()},
			PolicyTypes: []networkingv1.PolicyType{networkingv1.PolicyTypeIngress},
			Ingress: []networkingv1.NetworkPolicyIngressRule{{
				From:  []networkingv1.NetworkPolicyPeer{{PodSelector: &sandboxes}},
				Ports: proxyPort,
			}},
		},
	}
	// The policies first: no sandbox is ever up without them.
	objs := []runtime.Object{sandboxPolicy, proxyPolicy}
	if len(s.ClusterCIDRs) > 0 {
		objs = append(objs, s.proxyEgress(meta(EgressName+"-egress")))
	}
	return append(objs, config, claim, deploy, service), nil
}
