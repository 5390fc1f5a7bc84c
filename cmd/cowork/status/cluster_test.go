package status

import (
	"context"
	"encoding/json"
	"os"
	"strconv"
	"strings"
	"testing"

	"github.com/coworkhq/cowork/hostd/controlwire"
	"github.com/coworkhq/cowork/hostd/instance"
	"github.com/coworkhq/cowork/hostd/instance/instancetest"
	"github.com/coworkhq/cowork/internal/unixsock"
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

// answering is a stand-in hostd whose status is st, as a hostd reports
// it: the guest address and the traffic of its network stack, its
// hypervisor and accelerator.
type answering struct {
	controlwire.Unimplemented
	st controlwire.Status
}

func (a *answering) Status(context.Context) (*controlwire.Status, error) {
	st := a.st
	return &st, nil
}

// serveStatus holds the instance at p, a running daemon answering st.
func serveStatus(t *testing.T, p instance.Paths, st controlwire.Status) {
	t.Helper()
	l, err := instance.TryLock(p)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(l.Release)
	ln, err := unixsock.Listen(p.HostdSock())
	if err != nil {
		t.Fatal(err)
	}
	srv := controlwire.NewServer(&answering{st: st})
	go srv.Serve(ln)
	t.Cleanup(srv.Close)
}

// hostdAnswer is what a running hostd says: the local network stack's
// guest address and traffic, whatever the backend.
func hostdAnswer(backend, accel string) controlwire.Status {
	return controlwire.Status{
		State: "running", Ready: true, HostdPID: os.Getpid(), Arch: "amd64",
		GuestIP: "192.168.127.2", Backend: backend, Accelerator: accel,
		Network: &controlwire.NetworkStats{Flows: 7, Blocked: 1, MaxFlows: 100},
	}
}

// A running guest on a cluster is not on this machine's network stack
// and shares none of its folders: status shows no guest IP, no network
// line and no workspace (in --json no guest_ip nor network), and no
// empty accelerator. A local guest still shows them.
func TestStatusOfARunningClusterInstance(t *testing.T) {
	p, cfg := instancetest.New(t, instance.Config{
		Arch: "amd64", Backend: instance.BackendKubeVirt,
		Cluster: &instance.Cluster{Namespace: "team-a", Image: "quay.io/containerdisks/ubuntu:22.04"},
	})
	os.RemoveAll(cfg.Workspace) // no note about it: it is not shared
	serveStatus(t, p, hostdAnswer("kubevirt", ""))
	r := status(t)
	if r.err != nil || r.errOut != "" {
		t.Fatalf("%+v", r)
	}
	for _, want := range []string{"state:      running (ready)\n", "backend:    kubevirt (amd64 guest)\n", "workspace:  not shared (the guest runs on a cluster)\n"} {
		if !strings.Contains(r.out, want) {
			t.Errorf("status printed:\n%s\nwant the line %q", r.out, want)
		}
	}
	for _, not := range []string{"guest ip", "192.168.127.2", "network:", "flows:", "(, ", cfg.Workspace} {
		if strings.Contains(r.out, not) {
			t.Errorf("status printed:\n%s\nwith %q", r.out, not)
		}
	}
	r = status(t, "--json")
	var got map[string]any
	if err := json.Unmarshal([]byte(r.out), &got); err != nil || r.err != nil {
		t.Fatalf("%v %v\n%s", err, r.err, r.out)
	}
	for _, k := range []string{"guest_ip", "network"} {
		if v, ok := got[k]; ok && v != nil {
			t.Errorf("--json %s = %v, want it absent", k, v)
		}
	}

	// A local guest: its address, its traffic, its workspace; an
	// accelerator only when there is one.
	for accel, want := range map[string]string{"": "backend:    qemu (amd64 guest)\n", "kvm": "backend:    qemu (kvm, amd64 guest)\n"} {
		p, cfg := instancetest.New(t, instance.Config{Arch: "amd64"})
		serveStatus(t, p, hostdAnswer("qemu", accel))
		r := status(t)
		for _, want := range []string{want, "guest ip:   192.168.127.2\n", "network:    7 flows (1 blocked)", "workspace:  " + cfg.Workspace + "\n"} {
			if r.err != nil || !strings.Contains(r.out, want) {
				t.Errorf("a local guest, accelerator %q: status printed:\n%s\nwant %q", accel, r.out, want)
			}
		}
		if strings.Contains(r.out, "(, ") {
			t.Errorf("a local guest, accelerator %q:\n%s", accel, r.out)
		}
	}
}

// Without its daemon here, a guest on a cluster is stopped here; status
// does not claim its VM there is: it says how the VM is halted, that it
// may run on after a daemon died, and the kubectl command that tells.
func TestStatusOfAClusterInstanceWithoutItsDaemon(t *testing.T) {
	p, _ := instancetest.New(t, instance.Config{
		Backend: instance.BackendKubeVirt,
		Cluster: &instance.Cluster{Context: "kind-cowork", Namespace: "team-a", Image: "quay.io/containerdisks/ubuntu:22.04"},
	})
	check := "`kubectl --context kind-cowork -n team-a get vmi cowork-sandbox` shows it"
	r := status(t)
	if r.err != nil || !strings.Contains(r.out, "state:      stopped here\n") ||
		r.errOut != "note: its VM in the cluster, if it has one yet, is halted by `cowork stop`, and may still run if this machine's hostd died: "+check+"\n" {
		t.Errorf("stopped: %+v", r)
	}
	r = status(t, "--json")
	var st Status
	if r.err != nil || json.Unmarshal([]byte(r.out), &st) != nil || st.State != "stopped" || !strings.Contains(st.Note, "may still run") {
		t.Errorf("stopped, --json: %+v", r)
	}

	// A daemon that died: its VM may well run on.
	dead := 1 << 22 // above any pid_max
	os.WriteFile(p.PidFile(), []byte(strconv.Itoa(dead)), 0o600)
	r = status(t)
	if r.err != nil || strings.Contains(r.errOut, "without stopping the VM") ||
		r.errOut != "note: hostd (pid "+strconv.Itoa(dead)+") died; its leftovers here were cleaned up, but its VM in the cluster may still run: "+check+"\n" {
		t.Errorf("a dead daemon: %+v", r)
	}
}
