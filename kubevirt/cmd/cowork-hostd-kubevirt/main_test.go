package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	dynamicfake "k8s.io/client-go/dynamic/fake"
	"sigs.k8s.io/yaml"

	"github.com/coworkhq/cowork/hostd/instance"
	"github.com/coworkhq/cowork/internal/hostdwire"
	"github.com/coworkhq/cowork/kubevirt"
	"github.com/coworkhq/cowork/units"
)

func runMain(reach connector, args ...string) (int, string, string) {
	var out, errOut bytes.Buffer
	code := Main(context.Background(), args, &out, &errOut, reach)
	return code, out.String(), errOut.String()
}

func unreachable(string) (kubevirt.Backend, error) {
	return kubevirt.Backend{}, errors.New("no cluster in this test")
}

// A command line from another build is a usage error (exit 2) that says
// so, never a daemon started with the wrong meaning.
func TestUsageErrors(t *testing.T) {
	for _, args := range [][]string{nil, {"hostd"}, {"run", "--name"}, {"run", "stray"}, {"delete"}, {"delete", "--bogus"}, {"version", "--json"},
		{"egress"}, {"egress", "--namespace", "Team_A", "--image", "x"}, {"egress", "--namespace", "ns"}, {"egress", "--namespace", "ns", "--image", "x", "--audit-size", "lots"},
		{"egress", "--namespace", "ns", "--image", "x", "--cluster-cidr", "10.0.0.1/8"}, {"egress", "--namespace", "ns", "--image", "x", "--api-key-secret", "Not_A_Name"},
		// The key goes over https to a host, in a header: nowhere else.
		{"egress", "--namespace", "ns", "--image", "x", "--api-endpoint", "http://gateway.example"},
		{"egress", "--namespace", "ns", "--image", "x", "--api-endpoint", "https://user:pw@gateway.example"},
		{"egress", "--namespace", "ns", "--image", "x", "--api-endpoint", "https://gateway.example/v1?key=1"},
		{"egress", "--namespace", "ns", "--image", "x", "--api-endpoint", "https:///no-host"},
		{"egress", "--namespace", "ns", "--image", "x", "--api-endpoint", "https://gateway.example/\x1b[2J"}} {
		code, out, errOut := runMain(unreachable, args...)
		if code != hostdwire.ExitUsage || out != "" || errOut == "" {
			t.Errorf("%q: exit %d, stdout %q, stderr %q; want exit 2 and a message", args, code, out, errOut)
		}
	}
}

// egress prints the namespace's proxy and NetworkPolicies as YAML
// documents kubectl applies, in order; a policy file that is no egress
// policy is refused.
func TestEgressPrintsTheManifests(t *testing.T) {
	code, out, errOut := runMain(unreachable, "egress", "--namespace", "team-a", "--image", "registry.example/cowork-hostd:0.1", "--cluster-cidr", "10.96.0.0/12")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errOut)
	}
	var kinds []string
	for _, doc := range strings.Split(out, "---\n")[1:] {
		var u unstructured.Unstructured
		if err := yaml.Unmarshal([]byte(doc), &u.Object); err != nil {
			t.Fatalf("a document is not YAML: %v\n%s", err, doc)
		}
		if u.GetNamespace() != "team-a" {
			t.Errorf("%s %s is in namespace %q", u.GetKind(), u.GetName(), u.GetNamespace())
		}
		kinds = append(kinds, u.GetKind()+"/"+u.GetName())
	}
	for _, want := range []string{"Service/" + kubevirt.EgressName, "Deployment/" + kubevirt.EgressName, "NetworkPolicy/" + kubevirt.SandboxPolicyName, "NetworkPolicy/" + kubevirt.EgressName + "-egress"} {
		if !strings.Contains(strings.Join(kinds, " "), want) {
			t.Errorf("no %s among %v", want, kinds)
		}
	}
	if !strings.Contains(out, "secretName: "+kubevirt.DefaultAPIKeySecret+"\n") {
		t.Errorf("the proxy's pod does not mount the Secret %s", kubevirt.DefaultAPIKeySecret)
	}
	if code, out, _ := runMain(unreachable, "egress", "--namespace", "team-a", "--image", "x", "--api-key-secret", "team-a-key"); code != 0 || !strings.Contains(out, "secretName: team-a-key\n") {
		t.Errorf("--api-key-secret team-a-key: exit %d, the pod mounts no such Secret", code)
	}
	if strings.Contains(out, "--api-endpoint") {
		t.Errorf("the proxy is given an API endpoint nobody asked for")
	}
	if code, out, errOut := runMain(unreachable, "egress", "--namespace", "team-a", "--image", "x", "--api-endpoint", "https://gateway.example/anthropic"); code != 0 ||
		!strings.Contains(out, "- --api-endpoint\n") || !strings.Contains(out, "- https://gateway.example/anthropic\n") {
		t.Errorf("--api-endpoint: exit %d, the proxy is not started with it: %s\n%s", code, errOut, out)
	}
	dir := t.TempDir()
	bad := filepath.Join(dir, "policy.json")
	os.WriteFile(bad, []byte(`{"host_ports": [8080]}`), 0o600)
	if code, _, errOut := runMain(unreachable, "egress", "--namespace", "team-a", "--image", "x", "--policy", bad); code != hostdwire.ExitUsage || !strings.Contains(errOut, "host_ports") {
		t.Errorf("a policy with host ports: exit %d, %q", code, errOut)
	}
	if code, _, errOut := runMain(unreachable, "egress", "--namespace", "team-a", "--image", "x", "--policy", filepath.Join(dir, "none.json")); code != 1 || !strings.Contains(errOut, "none.json") {
		t.Errorf("a policy file that is not there: exit %d, %q", code, errOut)
	}
}

// writeInstance writes an instance's config into a fresh COWORK_HOME.
func writeInstance(t *testing.T, cfg *instance.Config) {
	t.Helper()
	t.Setenv("COWORK_HOME", t.TempDir())
	paths, err := instance.PathsFor(cfg.Name)
	if err != nil {
		t.Fatal(err)
	}
	os.MkdirAll(paths.Dir(), 0o700)
	b, _ := json.Marshal(cfg)
	if err := os.WriteFile(paths.Config(), b, 0o600); err != nil {
		t.Fatal(err)
	}
}

func kubeConfig(name string) *instance.Config {
	return &instance.Config{
		Name: name, CPUs: 2, Memory: 2 * units.GiB, Disk: 10 * units.GiB, Workspace: "/tmp", Arch: "amd64",
		Boot: instance.BootEFI, Backend: instance.BackendKubeVirt, Created: time.Now(),
		Cluster: &instance.Cluster{Context: "kind-cowork", Namespace: "team-a", Image: "quay.io/containerdisks/ubuntu:22.04"},
	}
}

var (
	vms     = schema.GroupVersionResource{Group: "kubevirt.io", Version: "v1", Resource: "virtualmachines"}
	secrets = schema.GroupVersionResource{Version: "v1", Resource: "secrets"}
)

func object(apiVersion, kind, name string, labels map[string]any) *unstructured.Unstructured {
	return &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": apiVersion, "kind": kind,
		"metadata": map[string]any{"name": name, "namespace": "team-a", "labels": labels},
	}}
}

// delete removes the instance's VM and seed Secret from the cluster of
// its context, and nothing else; an instance already gone from the
// cluster is no error; a local instance is not this binary's.
func TestDeleteRemovesTheInstancesObjects(t *testing.T) {
	writeInstance(t, kubeConfig("box"))
	ours := map[string]any{kubevirt.LabelManagedBy: "cowork", kubevirt.LabelInstance: "box"}
	client := dynamicfake.NewSimpleDynamicClient(runtime.NewScheme(),
		object("kubevirt.io/v1", "VirtualMachine", "cowork-box", ours),
		object("v1", "Secret", "cowork-box-cloudinit", ours),
		object("kubevirt.io/v1", "VirtualMachine", "cowork-other", map[string]any{kubevirt.LabelManagedBy: "cowork", kubevirt.LabelInstance: "other"}),
	)
	var asked []string
	reach := func(ctx string) (kubevirt.Backend, error) {
		asked = append(asked, ctx)
		return kubevirt.Backend{Client: client}, nil
	}
	for i := range 2 { // the second finds nothing left
		if code, _, errOut := runMain(reach, "delete", "--name", "box"); code != 0 {
			t.Fatalf("delete %d: exit %d: %s", i, code, errOut)
		}
	}
	ctx := context.Background()
	for _, o := range []struct {
		res  schema.GroupVersionResource
		name string
	}{{vms, "cowork-box"}, {secrets, "cowork-box-cloudinit"}} {
		if _, err := client.Resource(o.res).Namespace("team-a").Get(ctx, o.name, metav1.GetOptions{}); !apierrors.IsNotFound(err) {
			t.Errorf("%s is still there: %v", o.name, err)
		}
	}
	if _, err := client.Resource(vms).Namespace("team-a").Get(ctx, "cowork-other", metav1.GetOptions{}); err != nil {
		t.Errorf("another instance's VM went too: %v", err)
	}
	if len(asked) != 2 || asked[0] != "kind-cowork" {
		t.Errorf("reached the clusters of contexts %q; want the instance's, kind-cowork", asked)
	}

	local := kubeConfig("laptop")
	local.Backend, local.Cluster = instance.BackendLocal, nil
	writeInstance(t, local)
	if code, _, errOut := runMain(reach, "delete", "--name", "laptop"); code != 1 || !strings.Contains(errOut, "cowork-hostd's to run") {
		t.Errorf("delete of a local instance: exit %d, %q", code, errOut)
	}
	if code, _, errOut := runMain(unreachable, "delete", "--name", "nosuch"); code != 1 || errOut == "" {
		t.Errorf("delete of no instance: exit %d, %q", code, errOut)
	}
	writeInstance(t, kubeConfig("box"))
	if code, _, errOut := runMain(unreachable, "delete", "--name", "box"); code != 1 || !strings.Contains(errOut, "no cluster in this test") {
		t.Errorf("delete with the cluster out of reach: exit %d, %q", code, errOut)
	}
}

// run refuses a local instance, and one whose cluster it cannot reach,
// with exit 1 and the reason; it starts no hostd for either.
func TestRunRefusesWhatItCannotRun(t *testing.T) {
	local := kubeConfig("laptop")
	local.Backend, local.Cluster = instance.BackendLocal, nil
	writeInstance(t, local)
	if code, _, errOut := runMain(unreachable, "run", "--name", "laptop"); code != 1 || !strings.Contains(errOut, "cowork-hostd's to run") {
		t.Errorf("run of a local instance: exit %d, %q", code, errOut)
	}
	writeInstance(t, kubeConfig("box"))
	if code, _, errOut := runMain(unreachable, "run", "--name", "box"); code != 1 || !strings.Contains(errOut, "no cluster in this test") {
		t.Errorf("run with the cluster out of reach: exit %d, %q", code, errOut)
	}
	paths, _ := instance.PathsFor("box")
	if _, err := os.Stat(paths.HostdSock()); err == nil {
		t.Error("a control socket was left behind")
	}
}
