package kubevirt

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/rest"

	"github.com/coworkhq/cowork"
	"github.com/coworkhq/cowork/guestagent"
	"github.com/coworkhq/cowork/hostd"
	"github.com/coworkhq/cowork/hostd/agentclient"
	"github.com/coworkhq/cowork/hostd/instance"
	"github.com/coworkhq/cowork/hostd/machine"
	"github.com/coworkhq/cowork/image/agentbin"
	"github.com/coworkhq/cowork/internal/syncbuf"
	"github.com/coworkhq/cowork/units"
)

// home is the test's COWORK_HOME.
func home(t *testing.T) string { return os.Getenv("COWORK_HOME") }

// kubeInstance writes a kubevirt instance named name into a fresh
// COWORK_HOME and returns its config.
func kubeInstance(t *testing.T, name, ns string) *instance.Config {
	t.Helper()
	home := t.TempDir()
	t.Setenv("COWORK_HOME", home)
	ws := filepath.Join(t.TempDir(), "ws")
	if err := os.Mkdir(ws, 0o700); err != nil {
		t.Fatal(err)
	}
	cfg := &instance.Config{
		Name: name, CPUs: 2, Memory: 2 * units.GiB, Disk: 10 * units.GiB, Workspace: ws, Arch: "amd64",
		Boot: instance.BootEFI, InstanceID: "cowork-" + name, GuestUID: 1000,
		Backend: instance.BackendKubeVirt,
		Cluster: &instance.Cluster{Namespace: ns, Image: "quay.io/containerdisks/ubuntu:22.04"},
		Created: time.Now(),
	}
	if err := cfg.Validate(0); err != nil {
		t.Fatal(err)
	}
	writeConfig(t, cfg)
	return cfg
}

// writeConfig writes cfg as its instance's config.
func writeConfig(t *testing.T, cfg *instance.Config) {
	t.Helper()
	paths, err := instance.PathsFor(cfg.Name)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(paths.Dir(), 0o700); err != nil {
		t.Fatal(err)
	}
	b, _ := json.Marshal(cfg)
	if err := os.WriteFile(paths.Config(), b, 0o600); err != nil {
		t.Fatal(err)
	}
}

// deployedEgress is a namespace's egress as Egress makes it and the API
// server keeps it (the Service with its cluster IP), each object given
// labels instead of cowork's.
func deployedEgress(t *testing.T, ns string, labels map[string]any) []runtime.Object {
	t.Helper()
	pol, svc, err := wantedEgress(ns)
	if err != nil {
		t.Fatal(err)
	}
	svc.Spec.ClusterIP = "10.96.7.8"
	var out []runtime.Object
	for _, o := range []runtime.Object{svc, pol} {
		u, err := toUnstructured(o)
		if err != nil {
			t.Fatal(err)
		}
		u.Object["metadata"].(map[string]any)["labels"] = labels
		out = append(out, u)
	}
	return out
}

var ours = map[string]any{LabelManagedBy: managedBy}

// startHostd runs hostd for the instance "box" with newMachine until ctx
// ends, and `cowork start`s it, as the CLI does a hostd it finds: it
// returns a client of it (closed with the test), hostd's log, and what
// hostd.Run returns once it ends.
func startHostd(ctx context.Context, t *testing.T, newMachine func(machine.Config, *slog.Logger) (machine.Machine, error)) (*cowork.Client, *syncbuf.Buffer, <-chan error) {
	t.Helper()
	return startHostdOf(ctx, t, "box", newMachine)
}

// startHostdOf is startHostd for the instance name.
func startHostdOf(ctx context.Context, t *testing.T, name string, newMachine func(machine.Config, *slog.Logger) (machine.Machine, error)) (*cowork.Client, *syncbuf.Buffer, <-chan error) {
	t.Helper()
	logs := &syncbuf.Buffer{}
	done := make(chan error, 1)
	go func() {
		done <- hostd.Run(ctx, hostd.Options{Name: name, Log: slog.New(slog.NewTextHandler(logs, nil)), NewMachine: newMachine, AgentTimeout: 30 * time.Second})
	}()
	paths, _ := instance.PathsFor(name)
	for !instance.Held(paths) { // Start follows a hostd it finds, as it does one it launched
		time.Sleep(time.Millisecond)
	}
	// Ready already (the fake guest is quick) is ready too.
	if err := cowork.Start(ctx, "/nonexistent/cowork-hostd", name, nil); err != nil && !errors.Is(err, cowork.ErrAlreadyRunning) {
		t.Fatalf("start: %v\nhostd's log:\n%s", err, logs.String())
	}
	client, err := cowork.Dial(name)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { client.Close() })
	return client, logs, done
}

// provisionedGuest is a vsock server whose agent reports its guest
// provisioned, lending the guest the SSH agent at sshSock ("" for none).
func provisionedGuest(t *testing.T, sshSock string) *vsockServer {
	t.Helper()
	marker := filepath.Join(t.TempDir(), "provisioned")
	if err := os.WriteFile(marker, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	return newVsockServerWith(t, guestagent.Options{
		ProvisionedMarker: marker, DefaultUser: currentUser(t), Systemctl: "true",
		SetClock: func(time.Time) error { return nil }, TrustRoot: t.TempDir(), SSHAgentSocket: sshSock,
	})
}

// execEcho runs `echo msg` in the guest through client's agent.sock, and
// fails the test unless msg comes back.
func execEcho(ctx context.Context, t *testing.T, client *cowork.Client, msg string) {
	t.Helper()
	var out bytes.Buffer
	es, err := client.Exec(ctx, agentclient.ExecOptions{Argv: []string{"/bin/sh", "-c", "echo " + msg}, Dir: "/", Stdout: &out})
	if err != nil || es.Code != 0 || out.String() != msg+"\n" {
		t.Fatalf("exec: %+v %v %q", es, err, out.String())
	}
}

// hostd runs a kubevirt instance as it runs a local one: `cowork start`'s
// wait for ready, an exec through agent.sock (its agent reached through
// the vsock subresource), status naming the backend, and a stop that
// halts the VM and keeps it. The guest is seeded to use the namespace's
// egress proxy.
func TestHostdRunsAnInstanceOnTheCluster(t *testing.T) {
	cfg := kubeInstance(t, "box", "sandboxes")
	cfg.SSHAgent = true // asked for, but this machine's agent cannot reach the cluster's guest
	writeConfig(t, cfg)
	t.Setenv("SSH_AUTH_SOCK", filepath.Join(t.TempDir(), "agent.sock"))
	c := newCluster(t, "sandboxes", deployedEgress(t, "sandboxes", ours)...)
	sshSock := filepath.Join(t.TempDir(), "ssh.sock")
	vs := provisionedGuest(t, sshSock)
	b := Backend{Client: c.client, Dial: SubresourceDialer(&rest.Config{Host: vs.URL}), Poll: 5 * time.Millisecond}
	newMachine, err := b.NewMachine(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	client, logs, done := startHostd(ctx, t, newMachine)
	st, err := client.Status(ctx)
	if err != nil || st.Backend != "kubevirt" {
		t.Fatalf("status: %+v, %v; want the kubevirt backend", st, err)
	}
	if _, err := os.Stat(sshSock); err == nil {
		t.Error("the guest was lent this machine's SSH agent, through a network stack it is not on")
	}
	if st.GuestIP != "" || st.Network != nil {
		t.Errorf("status gives the guest this machine's network (ip %q, %+v); it is on the cluster's", st.GuestIP, st.Network)
	}
	execEcho(ctx, t, client, "hello from the cluster")

	sec, err := c.client.Resource(secretResource).Namespace("sandboxes").Get(ctx, "cowork-box-cloudinit", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	ud, _, _ := unstructured.NestedString(sec.Object, "data", "userdata")
	raw, err := base64.StdEncoding.DecodeString(ud)
	if err != nil || !strings.Contains(string(raw), "http_proxy=http://10.96.7.8:7890 ") {
		t.Errorf("the guest's seed does not send it through the namespace's egress proxy: %v\n%s", err, raw)
	}
	if strings.Contains(string(raw), "virtiofs") {
		t.Errorf("the cluster's guest is told to mount a share of this machine:\n%s", raw)
	}
	if _, err := os.Stat(filepath.Join(home(t), "box", "cidata.iso")); err == nil {
		t.Error("a seed disk was made on this machine for a guest on the cluster")
	}
	sum, _ := agentbin.Sum("amd64")
	if want := "http://10.96.7.8:7890/cowork-agent/linux-amd64 " + sum; !strings.Contains(string(raw), want) {
		t.Errorf("the guest's seed does not fetch this build's agent from the proxy (%s):\n%s", want, raw)
	}
	vm, err := c.client.Resource(vmResource).Namespace("sandboxes").Get(ctx, "cowork-box", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if arch, _, _ := unstructured.NestedString(vm.Object, "spec", "template", "spec", "architecture"); arch != "amd64" {
		t.Errorf("the VM runs on nodes of architecture %q, want the instance's (amd64), whose agent it fetches", arch)
	}
	ifaces, _, _ := unstructured.NestedSlice(vm.Object, "spec", "template", "spec", "domain", "devices", "interfaces")
	if len(ifaces) != 1 || ifaces[0].(map[string]any)["macAddress"] != hostd.GuestFor(cfg).MAC {
		t.Errorf("the VM's NIC is not the one its network-config names (%s): %v", hostd.GuestFor(cfg).MAC, ifaces)
	}

	if err := client.Stop(ctx, false, 10*time.Second); err != nil {
		t.Fatal(err)
	}
	if err := <-done; err != nil {
		t.Fatalf("hostd: %v\n%s", err, logs.String())
	}
	if _, err := c.client.Resource(vmiResource).Namespace("sandboxes").Get(ctx, "cowork-box", metav1.GetOptions{}); !apierrors.IsNotFound(err) {
		t.Errorf("the VMI outlived the stop: %v", err)
	}
	if _, err := c.client.Resource(vmResource).Namespace("sandboxes").Get(ctx, "cowork-box", metav1.GetOptions{}); err != nil {
		t.Errorf("the stop took the VM (and its disk) with it: %v", err)
	}
}

// No guest runs in a namespace whose egress proxy is missing or not
// cowork's, or whose sandboxes' NetworkPolicy is: it would reach the
// network unaudited, or through someone else's proxy. Nothing is made in
// the cluster, and the error says how to deploy the proxy.
func TestNoSandboxRunsWithoutTheEgressProxy(t *testing.T) {
	objs := deployedEgress(t, "sandboxes", ours)
	svc, pol := objs[0], objs[1]
	foreign := deployedEgress(t, "sandboxes", map[string]any{LabelManagedBy: "someone-else"})
	for _, tc := range []struct {
		name string
		objs []runtime.Object
		want string
	}{
		{"nothing deployed", nil, "has no NetworkPolicy cowork-sandboxes"},
		{"no policy", []runtime.Object{svc}, "has no NetworkPolicy cowork-sandboxes"},
		{"no proxy", []runtime.Object{pol}, "has no egress proxy"},
		{"another's policy", []runtime.Object{svc, foreign[1]}, "is not cowork's"},
		{"another's proxy", []runtime.Object{foreign[0], pol}, "is not cowork's"},
		{"a policy opened to anywhere", []runtime.Object{svc, edited(t, pol, func(u map[string]any) {
			u["spec"].(map[string]any)["egress"] = []any{map[string]any{}}
		})}, "is not the one this cowork makes"},
		{"a policy opening one more port of the proxy's pod", []runtime.Object{svc, edited(t, pol, func(u map[string]any) {
			rule := u["spec"].(map[string]any)["egress"].([]any)[0].(map[string]any)
			rule["ports"] = append(rule["ports"].([]any), map[string]any{"protocol": "TCP", "port": int64(SessionsPort)})
		})}, "is not the one this cowork makes"},
		{"a policy opening the relay's port to anywhere", []runtime.Object{svc, edited(t, pol, func(u map[string]any) {
			spec := u["spec"].(map[string]any)
			spec["egress"] = append(spec["egress"].([]any), map[string]any{"ports": []any{map[string]any{"protocol": "TCP", "port": int64(RelayPort)}}})
		})}, "is not the one this cowork makes"},
		{"a proxy Service with one more port", []runtime.Object{edited(t, svc, func(u map[string]any) {
			spec := u["spec"].(map[string]any)
			spec["ports"] = append(spec["ports"].([]any), map[string]any{"name": "sessions", "port": int64(SessionsPort), "targetPort": int64(SessionsPort), "protocol": "TCP"})
		}), pol}, "does not lead to cowork's proxy"},
		{"a proxy Service leading elsewhere", []runtime.Object{edited(t, svc, func(u map[string]any) {
			u["spec"].(map[string]any)["selector"] = map[string]any{"app": "mine"}
		}), pol}, "does not lead to cowork's proxy"},
		{"another policy letting every pod out", append([]runtime.Object{svc, pol}, otherPolicy(map[string]any{})), "may apply to the sandbox's pod"},
		{"another policy on KubeVirt's pods", append([]runtime.Object{svc, pol}, otherPolicy(map[string]any{"matchLabels": map[string]any{"kubevirt.io/domain": "cowork-box"}})), "may apply to the sandbox's pod"},
		{"another policy on this sandbox", append([]runtime.Object{svc, pol}, otherPolicy(map[string]any{"matchLabels": map[string]any{LabelInstance: "box"}})), "may apply to the sandbox's pod"},
		{"another policy letting pods in, by default", append([]runtime.Object{svc, pol}, rawPolicy(map[string]any{"podSelector": map[string]any{}, "ingress": []any{map[string]any{}}})), "may apply to the sandbox's pod"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := kubeInstance(t, "box", "sandboxes")
			c := newCluster(t, "sandboxes", tc.objs...)
			newMachine, err := Backend{Client: c.client, Dial: SubresourceDialer(&rest.Config{Host: "http://127.0.0.1:1"})}.NewMachine(cfg)
			if err != nil {
				t.Fatal(err)
			}
			_, err = newMachine(machine.Config{}, nil)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("made a machine: %v; want an error saying %q", err, tc.want)
			}
			if strings.Contains(tc.want, "has no") && !strings.Contains(err.Error(), "cowork-hostd-kubevirt egress --namespace sandboxes") {
				t.Errorf("the error does not say how to deploy the proxy: %v", err)
			}
			vms, _ := c.client.Resource(vmResource).Namespace("sandboxes").List(context.Background(), metav1.ListOptions{})
			secrets, _ := c.client.Resource(secretResource).Namespace("sandboxes").List(context.Background(), metav1.ListOptions{})
			if len(vms.Items)+len(secrets.Items) != 0 {
				t.Errorf("objects made in the cluster: %d VMs, %d Secrets", len(vms.Items), len(secrets.Items))
			}
		})
	}
	t.Run("the whole egress, and policies for other pods", func(t *testing.T) {
		cfg := kubeInstance(t, "box", "sandboxes")
		objs, err := Egress(EgressSpec{Namespace: "sandboxes", Image: "x", AuditSize: 64 << 20, ClusterCIDRs: []string{"10.96.0.0/12"}})
		if err != nil {
			t.Fatal(err)
		}
		var all []runtime.Object
		for _, o := range objs {
			u, _ := toUnstructured(o)
			if u.GetKind() == "Service" {
				unstructured.SetNestedField(u.Object, "10.96.7.8", "spec", "clusterIP")
			}
			all = append(all, u)
		}
		all = append(all, otherPolicy(map[string]any{"matchLabels": map[string]any{"app": "web"}}),
			otherPolicy(map[string]any{"matchLabels": map[string]any{LabelInstance: "another-box"}}),
			// Rules of a type the policy does not name are ignored by
			// Kubernetes; a type named without rules only denies.
			rawPolicy(map[string]any{"podSelector": map[string]any{}, "policyTypes": []any{"Egress"}, "ingress": []any{map[string]any{}}}),
			rawPolicy(map[string]any{"podSelector": map[string]any{}, "policyTypes": []any{"Ingress", "Egress"}}))
		c := newCluster(t, "sandboxes", all...)
		newMachine, err := Backend{Client: c.client, Dial: SubresourceDialer(&rest.Config{Host: "http://127.0.0.1:1"})}.NewMachine(cfg)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := newMachine(machine.Config{}, nil); err != nil {
			t.Fatalf("a namespace as Egress makes it, with policies for other pods: %v", err)
		}
	})
	t.Run("a local instance", func(t *testing.T) {
		cfg := kubeInstance(t, "box", "sandboxes")
		cfg.Backend, cfg.Cluster = instance.BackendLocal, nil
		if _, err := (Backend{}).NewMachine(cfg); err == nil || !strings.Contains(err.Error(), "cowork-hostd's to run") {
			t.Fatalf("NewMachine of a local instance: %v", err)
		}
	})
}

// edited is a copy of the unstructured object o, changed by edit.
func edited(t *testing.T, o runtime.Object, edit func(map[string]any)) runtime.Object {
	t.Helper()
	u := o.(*unstructured.Unstructured).DeepCopy()
	edit(u.Object)
	return u
}

var others int

// rawPolicy is someone else's NetworkPolicy with spec.
func rawPolicy(spec map[string]any) runtime.Object {
	others++
	return &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
		"metadata": map[string]any{"name": fmt.Sprintf("deny-%d", others), "namespace": "sandboxes"},
		"spec":     spec,
	}}
}

// otherPolicy is a NetworkPolicy of someone else's in the namespace,
// letting the pods selector selects send anywhere.
func otherPolicy(selector map[string]any) runtime.Object {
	others++
	return &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
		"metadata": map[string]any{"name": fmt.Sprintf("allow-out-%d", others), "namespace": "sandboxes"},
		"spec":     map[string]any{"podSelector": selector, "policyTypes": []any{"Egress"}, "egress": []any{map[string]any{}}},
	}}
}

// A cluster guest whose agent never answers (another build's agent was
// refused, the guest did not boot) ends the start with where to look on
// the cluster, not this machine's empty console log.
func TestALateAgentOnTheClusterSaysWhereToLook(t *testing.T) {
	cfg := kubeInstance(t, "box", "sandboxes")
	c := newCluster(t, "sandboxes", deployedEgress(t, "sandboxes", ours)...)
	b := Backend{Client: c.client, Dial: SubresourceDialer(&rest.Config{Host: "http://127.0.0.1:1"}), Poll: 5 * time.Millisecond}
	newMachine, err := b.NewMachine(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	err = hostd.Run(ctx, hostd.Options{Name: "box", Log: slog.New(slog.NewTextHandler(io.Discard, nil)), NewMachine: newMachine, AgentTimeout: 300 * time.Millisecond})
	if err == nil || !strings.Contains(err.Error(), "virtctl console cowork-box -n sandboxes") || strings.Contains(err.Error(), "serial.log") {
		t.Fatalf("hostd: %v; want the cluster's console named", err)
	}
}
