package status

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/coworkhq/cowork/hostd/instance"
	"github.com/coworkhq/cowork/hostd/instance/instancetest"
	"github.com/coworkhq/cowork/units"
)

// Status says where a guest on a cluster runs: its backend, context,
// namespace and container disk, in the text and in --json; its disk is
// the cluster's. A local instance shows none of it.
func TestStatusOfAClusterInstance(t *testing.T) {
	instancetest.New(t, instance.Config{
		Disk: 10 * units.GiB, Backend: instance.BackendKubeVirt,
		Cluster: &instance.Cluster{Context: "kind-cowork", Namespace: "team-a", Image: "quay.io/containerdisks/ubuntu:22.04"},
	})
	r := status(t)
	if r.err != nil {
		t.Fatal(r.err)
	}
	for _, want := range []string{
		"cluster:    kubevirt, namespace team-a, context kind-cowork, image quay.io/containerdisks/ubuntu:22.04\n",
		"disk:       10 GiB (a DataVolume in the cluster)\n",
	} {
		if !strings.Contains(r.out, want) {
			t.Errorf("status printed:\n%s\nwant the line %q", r.out, want)
		}
	}
	r = status(t, "--json")
	var got struct {
		Cluster map[string]string `json:"cluster"`
	}
	if err := json.Unmarshal([]byte(r.out), &got); err != nil || r.err != nil {
		t.Fatalf("%v %v\n%s", err, r.err, r.out)
	}
	want := map[string]string{"backend": "kubevirt", "context": "kind-cowork", "namespace": "team-a", "image": "quay.io/containerdisks/ubuntu:22.04"}
	if len(got.Cluster) != len(want) {
		t.Errorf("--json cluster %v, want %v", got.Cluster, want)
	}
	for k, v := range want {
		if got.Cluster[k] != v {
			t.Errorf("--json cluster.%s = %q, want %q", k, got.Cluster[k], v)
		}
	}

	// Without a context: the kubeconfig's current one, said so.
	instancetest.New(t, instance.Config{Backend: instance.BackendKubeVirt, Cluster: &instance.Cluster{Namespace: "cowork", Image: "quay.io/x:1"}})
	if r := status(t); !strings.Contains(r.out, "cluster:    kubevirt, namespace cowork, the kubeconfig's current context, image quay.io/x:1\n") {
		t.Errorf("no context:\n%s", r.out)
	}

	instancetest.New(t, instance.Config{Disk: 10 * units.GiB})
	if r := status(t); strings.Contains(r.out, "cluster") || !strings.Contains(r.out, "disk:       0 B used of 10 GiB\n") {
		t.Errorf("a local instance:\n%s", r.out)
	}
	if r := status(t, "--json"); strings.Contains(r.out, `"cluster"`) {
		t.Errorf("a local instance's --json:\n%s", r.out)
	}
}
