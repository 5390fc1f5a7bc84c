package kubevirt

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"strings"
	"testing"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/rest"
	k8stesting "k8s.io/client-go/testing"

	"github.com/coworkhq/cowork/hostd"
	"github.com/coworkhq/cowork/hostd/instance"
)

// cloneSpec is a throwaway clone of the instance golden.
func cloneSpec() Spec {
	s := testSpec()
	s.Instance, s.CloneOf = "golden-rm-1a2b3c4d", "golden"
	return s
}

// sourceDisk is the root DataVolume of instance src as CDI keeps it,
// with labels and the phase phase ("" for none).
func sourceDisk(src string, labels map[string]any, phase string) *unstructured.Unstructured {
	u := &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": "cdi.kubevirt.io/v1beta1", "kind": "DataVolume",
		"metadata": map[string]any{"name": "cowork-" + src + "-root", "namespace": "sandboxes", "labels": labels},
	}}
	if phase != "" {
		u.Object["status"] = map[string]any{"phase": phase}
	}
	return u
}

// sourceLabels are the labels cowork gives instance src's objects.
func sourceLabels(src string) map[string]any {
	return map[string]any{LabelManagedBy: managedBy, LabelInstance: src}
}

// sourceVM is instance src's VM with spec.
func sourceVM(src string, spec map[string]any) *unstructured.Unstructured {
	return &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": "kubevirt.io/v1", "kind": "VirtualMachine",
		"metadata": map[string]any{"name": "cowork-" + src, "namespace": "sandboxes", "labels": sourceLabels(src)},
		"spec":     spec,
	}}
}

// checkClonesGolden fails the test unless the clone's VM in c has one
// disk, cloned from golden's PVC.
func checkClonesGolden(ctx context.Context, t *testing.T, c *cluster) {
	t.Helper()
	vm, err := c.client.Resource(vmResource).Namespace("sandboxes").Get(ctx, "cowork-golden-rm-1a2b3c4d", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	dvs, _, _ := unstructured.NestedSlice(vm.Object, "spec", "dataVolumeTemplates")
	if len(dvs) != 1 {
		t.Fatalf("the clone's disks: %v", dvs)
	}
	pvc, _, _ := unstructured.NestedMap(dvs[0].(map[string]any), "spec", "source", "pvc")
	if pvc["name"] != "cowork-golden-root" || pvc["namespace"] != "sandboxes" {
		t.Errorf("the clone's disk comes from %v, want the PVC sandboxes/cowork-golden-root", dvs[0])
	}
}

// A clone's VM is made with its root disk cloned from its source's PVC,
// once the source's disk is there and its VM halted; deleting the clone
// deletes the clone's objects, never its source's.
func TestCloneStartsFromItsSourcesDisk(t *testing.T) {
	c := newCluster(t, "sandboxes", sourceDisk("golden", sourceLabels("golden"), "Succeeded"), sourceVM("golden", map[string]any{"runStrategy": "Halted"}))
	m, err := New(c.client, cloneSpec(), []byte("#cloud-config\n"), nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	m.Poll = 5 * time.Millisecond
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := m.Start(ctx); err != nil {
		t.Fatal(err)
	}
	checkClonesGolden(ctx, t, c)
	if err := m.Stop(ctx, 0); err != nil {
		t.Fatal(err)
	}
	if err := m.Delete(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := c.client.Resource(vmResource).Namespace("sandboxes").Get(ctx, "cowork-golden-rm-1a2b3c4d", metav1.GetOptions{}); err == nil {
		t.Error("the clone's VM outlived its Delete")
	}
	if _, err := c.client.Resource(dataVolumeResource).Namespace("sandboxes").Get(ctx, "cowork-golden-root", metav1.GetOptions{}); err != nil {
		t.Errorf("the source's disk went with its clone: %v", err)
	}
	if _, err := c.client.Resource(vmResource).Namespace("sandboxes").Get(ctx, "cowork-golden", metav1.GetOptions{}); err != nil {
		t.Errorf("the source's VM went with its clone: %v", err)
	}
}

// No clone's VM is made from a disk that is missing, not cowork's disk
// of that instance, not made yet, or in use by a VM: CDI would wait for
// ever, or copy a disk cowork did not make into a sandbox. Nothing is
// made in the cluster, and the error says what to do.
func TestCloneRefusesASourceItCannotClone(t *testing.T) {
	stop := "stop golden first (`cowork stop --name golden`): the cluster clones its disk only while no VM uses it"
	for _, tc := range []struct {
		name string
		objs []runtime.Object
		want string
	}{
		{"no source disk", nil, "instance golden has no disk in namespace sandboxes to clone (no DataVolume cowork-golden-root): start it once (`cowork start --name golden`)"},
		{"another's disk of the name", []runtime.Object{sourceDisk("golden", map[string]any{"team": "db"}, "Succeeded")}, "is not cowork's disk of instance golden"},
		{"another instance's disk", []runtime.Object{sourceDisk("golden", sourceLabels("other"), "Succeeded")}, "is not cowork's disk of instance golden"},
		{"a disk still importing", []runtime.Object{sourceDisk("golden", sourceLabels("golden"), "ImportInProgress")}, `is not made yet (phase "ImportInProgress")`},
		{"a disk with no phase", []runtime.Object{sourceDisk("golden", sourceLabels("golden"), "")}, `is not made yet (phase "")`},
		{"a running source", []runtime.Object{sourceDisk("golden", sourceLabels("golden"), "Succeeded"), sourceVM("golden", map[string]any{"runStrategy": "Always"})}, stop},
		{"a source set to run the old way", []runtime.Object{sourceDisk("golden", sourceLabels("golden"), "Succeeded"), sourceVM("golden", map[string]any{"running": true})}, stop},
		{"a source whose guest is still going down", []runtime.Object{sourceDisk("golden", sourceLabels("golden"), "Succeeded"), &unstructured.Unstructured{Object: map[string]any{
			"apiVersion": "kubevirt.io/v1", "kind": "VirtualMachineInstance",
			"metadata": map[string]any{"name": "cowork-golden", "namespace": "sandboxes"},
			"status":   map[string]any{"phase": "Running"},
		}}}, stop},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := newCluster(t, "sandboxes", tc.objs...)
			close(c.stop) // no controller: the source stays as it is given
			c.wg.Wait()
			c.stop = make(chan struct{})
			m, _ := New(c.client, cloneSpec(), []byte("#cloud-config\n"), nil, nil)
			m.Poll = 5 * time.Millisecond
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			if err := m.Start(ctx); err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Start: %v; want an error saying %q", err, tc.want)
			}
			if _, err := c.client.Resource(vmResource).Namespace("sandboxes").Get(ctx, "cowork-golden-rm-1a2b3c4d", metav1.GetOptions{}); err == nil {
				t.Error("the clone's VM was made")
			}
			if _, err := c.client.Resource(secretResource).Namespace("sandboxes").Get(ctx, "cowork-golden-rm-1a2b3c4d-cloudinit", metav1.GetOptions{}); err == nil {
				t.Error("the clone's seed Secret was made")
			}
		})
	}
}

// An API server that fails to say whether the clone's VM is there gets
// no VM made: a clone is never made without its source checked.
func TestCloneIsNeverMadeUnchecked(t *testing.T) {
	// The first read of the clone's VM fails; or says it is there, and
	// it is gone by the second.
	for _, failing := range []bool{true, false} {
		c := newCluster(t, "sandboxes", sourceDisk("golden", sourceLabels("golden"), "Succeeded"),
			sourceVM("golden", map[string]any{"runStrategy": "Always"}))
		close(c.stop)
		c.wg.Wait()
		c.stop = make(chan struct{})
		reads := 0
		c.client.PrependReactor("get", "virtualmachines", func(a k8stesting.Action) (bool, runtime.Object, error) {
			if a.(k8stesting.GetAction).GetName() != "cowork-golden-rm-1a2b3c4d" {
				return false, nil, nil
			}
			if reads++; reads > 1 {
				return false, nil, nil
			}
			if failing {
				return true, nil, apierrors.NewInternalError(errors.New("etcd is slow"))
			}
			return true, &unstructured.Unstructured{Object: map[string]any{"apiVersion": "kubevirt.io/v1", "kind": "VirtualMachine",
				"metadata": map[string]any{"name": "cowork-golden-rm-1a2b3c4d", "namespace": "sandboxes"}}}, nil
		})
		m, _ := New(c.client, cloneSpec(), []byte("#cloud-config\n"), nil, nil)
		m.Poll = 5 * time.Millisecond
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		err := m.Start(ctx)
		cancel()
		if err == nil || !strings.Contains(err.Error(), "etcd is slow") && !strings.Contains(err.Error(), "stop golden first") {
			t.Fatalf("first read failing %v: Start: %v; want the read's error or the running source refused", failing, err)
		}
		if _, err := c.client.Resource(vmResource).Namespace("sandboxes").Get(context.Background(), "cowork-golden-rm-1a2b3c4d", metav1.GetOptions{}); err == nil {
			t.Errorf("first read failing %v: the clone's VM was made from a running source", failing)
		}
	}
}

// cloneInstance writes the config of a throwaway clone of the instance
// golden, as cowork's Throwaway makes one, into a fresh COWORK_HOME.
func cloneInstance(t *testing.T) *instance.Config {
	t.Helper()
	cfg := kubeInstance(t, "golden-rm-1a2b3c4d", "sandboxes")
	cfg.Cluster.CloneOf = "golden"
	cfg.Throwaway = &instance.Throwaway{Parent: "golden", Made: time.Now()}
	if err := cfg.Validate(0); err != nil {
		t.Fatal(err)
	}
	writeConfig(t, cfg)
	return cfg
}

// hostd runs a throwaway clone as any kubevirt instance: `cowork
// start`'s wait for ready, an exec reaching the agent through the vsock
// subresource; its VM's disk is its source's PVC, cloned.
func TestHostdRunsAClone(t *testing.T) {
	cfg := cloneInstance(t)
	objs := append(deployedEgress(t, "sandboxes", ours), sourceDisk("golden", sourceLabels("golden"), "Succeeded"), sourceVM("golden", map[string]any{"runStrategy": "Halted"}))
	c := newCluster(t, "sandboxes", objs...)
	vs := provisionedGuest(t, "") // the clone's disk is its provisioned source's
	b := Backend{Client: c.client, Dial: SubresourceDialer(&rest.Config{Host: vs.URL}), Poll: 5 * time.Millisecond}
	newMachine, err := b.NewMachine(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	client, logs, done := startHostdOf(ctx, t, cfg.Name, newMachine)
	execEcho(ctx, t, client, "hello from a clone")
	checkClonesGolden(ctx, t, c)
	if err := client.Stop(ctx, true, 0); err != nil {
		t.Fatal(err)
	}
	if err := <-done; err != nil {
		t.Fatalf("hostd: %v\n%s", err, logs.String())
	}
}

// A clone whose source runs does not start, and its start says to stop
// the source: what `cowork exec --rm` shows when the parent runs on the
// cluster but not on this machine.
func TestHostdRefusesACloneOfARunningSource(t *testing.T) {
	cfg := cloneInstance(t)
	objs := append(deployedEgress(t, "sandboxes", ours), sourceDisk("golden", sourceLabels("golden"), "Succeeded"), sourceVM("golden", map[string]any{"runStrategy": "Always"}))
	c := newCluster(t, "sandboxes", objs...)
	b := Backend{Client: c.client, Dial: SubresourceDialer(&rest.Config{Host: "http://127.0.0.1:1"}), Poll: 5 * time.Millisecond}
	newMachine, err := b.NewMachine(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	err = hostd.Run(ctx, hostd.Options{Name: cfg.Name, Log: slog.New(slog.NewTextHandler(io.Discard, nil)), NewMachine: newMachine, AgentTimeout: time.Second})
	if err == nil || !strings.Contains(err.Error(), "stop golden first (`cowork stop --name golden`)") {
		t.Fatalf("hostd: %v; want the source's stop asked for", err)
	}
	if _, err := c.client.Resource(vmResource).Namespace("sandboxes").Get(ctx, "cowork-golden-rm-1a2b3c4d", metav1.GetOptions{}); err == nil {
		t.Error("the clone's VM was made")
	}
}
