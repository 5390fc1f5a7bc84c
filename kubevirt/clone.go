package kubevirt

import (
	"context"
	"fmt"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	kvv1 "kubevirt.io/api/core/v1"
	cdiv1 "kubevirt.io/containerized-data-importer-api/pkg/apis/core/v1beta1"

	"github.com/coworkhq/cowork/hostd/instance"
)

// A clone's VM (Spec.CloneOf) names its source's PVC in its
// DataVolumeTemplate, and CDI copies it. CDI clones only a source no pod
// uses, and otherwise waits, with no end and nothing said to cowork; so
// the VM is made only once its source is there, cowork's, made, and not
// in use.

var dataVolumeResource = schema.GroupVersionResource{Group: "cdi.kubevirt.io", Version: "v1beta1", Resource: "datavolumes"}

// checkSource says why the clone m's VM cannot be made now: its source's
// DataVolume is missing, not cowork's disk of that instance, not made
// yet, or in use by the source's VM; nil when CDI can clone it at once.
func (m *Machine) checkSource(ctx context.Context) error {
	src, ns := m.spec.CloneOf, m.spec.Namespace
	flag := instance.NameFlag(src)
	dvName := rootDataVolume(src)
	dv, err := m.client.Resource(dataVolumeResource).Namespace(ns).Get(ctx, dvName, metav1.GetOptions{})
	switch {
	case apierrors.IsNotFound(err):
		return fmt.Errorf("instance %s has no disk in namespace %s to clone (no DataVolume %s): start it once (`cowork start%s`) so that its disk is made and provisioned, stop it, then run again", src, ns, dvName, flag)
	case err != nil:
		return fmt.Errorf("read DataVolume %s/%s, the disk to clone: %w", ns, dvName, err)
	}
	if l := dv.GetLabels(); l[LabelManagedBy] != managedBy || l[LabelInstance] != src {
		return fmt.Errorf("DataVolume %s/%s is not cowork's disk of instance %s (its labels: %v); cowork clones no disk it did not make", ns, dvName, src, l)
	}
	if phase, _, _ := unstructured.NestedString(dv.Object, "status", "phase"); phase != string(cdiv1.Succeeded) {
		return fmt.Errorf("instance %s's disk (DataVolume %s/%s) is not made yet (phase %q): start %s once (`cowork start%s`) and let it become ready, stop it, then run again", src, ns, dvName, phase, src, flag)
	}
	stop := fmt.Errorf("stop %s first (`cowork stop%s`): the cluster clones its disk only while no VM uses it", src, flag)
	vmName := "cowork-" + src
	vm, err := m.vms().Get(ctx, vmName, metav1.GetOptions{})
	switch {
	case apierrors.IsNotFound(err):
	case err != nil:
		return fmt.Errorf("read VirtualMachine %s/%s, whose disk is to be cloned: %w", ns, vmName, err)
	default:
		run, _, _ := unstructured.NestedString(vm.Object, "spec", "runStrategy")
		running, _, _ := unstructured.NestedBool(vm.Object, "spec", "running")
		if running || run != "" && run != string(kvv1.RunStrategyHalted) {
			return stop
		}
	}
	// A VM just halted keeps its VMI (and its pod, with the disk) until
	// the guest is down.
	vmi, err := m.vmis().Get(ctx, vmName, metav1.GetOptions{})
	switch {
	case apierrors.IsNotFound(err):
		return nil
	case err != nil:
		return fmt.Errorf("read VirtualMachineInstance %s/%s, whose disk is to be cloned: %w", ns, vmName, err)
	}
	if p, _, _ := unstructured.NestedString(vmi.Object, "status", "phase"); p != string(kvv1.Succeeded) && p != string(kvv1.Failed) {
		return stop
	}
	return nil
}
