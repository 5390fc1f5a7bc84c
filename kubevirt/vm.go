// Package kubevirt runs a cowork instance's guest on a Kubernetes cluster
// through KubeVirt: the same guest image, provisioned by the same
// cloud-init seed, its agent reached over the VM's vsock through the API
// server (KubeVirt's vsock subresource), behind the same Machine
// interface as QEMU and Virtualization.framework (hostd/machine). See
// docs/scale-out.md for the design and what has been proven where.
package kubevirt

import (
	"fmt"
	"net"
	"regexp"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	kvv1 "kubevirt.io/api/core/v1"
	cdiv1 "kubevirt.io/containerized-data-importer-api/pkg/apis/core/v1beta1"
)

// The labels every object of an instance carries: the NetworkPolicy that
// confines its guest, `kubectl get -l`, and a sweep of what a failed init
// left all select by them.
const (
	LabelManagedBy = "app.kubernetes.io/managed-by"
	LabelInstance  = "cowork.dev/instance"
	managedBy      = "cowork"
)

// The resources the backend reads and writes.
var (
	vmResource      = schema.GroupVersionResource{Group: "kubevirt.io", Version: "v1", Resource: "virtualmachines"}
	vmiResource     = schema.GroupVersionResource{Group: "kubevirt.io", Version: "v1", Resource: "virtualmachineinstances"}
	secretResource  = schema.GroupVersionResource{Version: "v1", Resource: "secrets"}
	cloudInitSuffix = "-cloudinit"
)

// Spec is what a VirtualMachine of an instance is made from: the usual
// flags of `cowork init`, and where its disk comes from.
type Spec struct {
	// Instance is cowork's name for it; the cluster's objects are named
	// cowork-INSTANCE.
	Instance  string
	Namespace string
	CPUs      int
	Memory    int64 // bytes
	// Disk is the size of the root disk (bytes): a DataVolume that CDI
	// fills from Image, which lives as long as the VM (stop and start
	// keep it, as they keep a local instance's disk).
	Disk int64
	// Image is the guest image as a container disk reference (a registry
	// image holding the qcow2, e.g. quay.io/containerdisks/ubuntu:22.04).
	Image string
	// Ephemeral boots Image as a containerDisk instead: no volume to
	// provision, nothing kept past the VM's run. For throwaway sandboxes.
	Ephemeral bool
	// CloneOf, when set, names the instance (in Namespace) whose root
	// disk CDI clones into this one's instead of importing Image: that
	// disk was provisioned once, so the clone's guest skips cloud-init's
	// installs (a golden image, the cluster's way). Disk must be at least
	// the source's. CDI clones only while no VM uses the source
	// (Machine.checkSource).
	CloneOf string
	// Arch is the guest's architecture (GOARCH: amd64, arm64): the VM
	// runs on a node of it, and fetches that agent; empty leaves it to
	// the cluster's default.
	Arch string
	// MAC is the guest NIC's address, the one its network-config names
	// (image.NetworkConfig matches the NIC by it); empty lets KubeVirt
	// choose, for a seed that matches any NIC.
	MAC string
}

// nameRE is what Kubernetes takes as a name (RFC 1123 label), less the
// "cowork-" prefix and the suffixes the backend adds.
var nameRE = regexp.MustCompile(`^[a-z0-9]([-a-z0-9]*[a-z0-9])?$`)

// Check says what is wrong with s, in words that name the flag to fix.
func (s Spec) Check() error {
	switch {
	case !nameRE.MatchString(s.Instance) || len(s.Instance) > 40:
		return fmt.Errorf("instance name %q cannot name a Kubernetes object: use at most 40 lowercase letters, digits and dashes, starting and ending with a letter or digit", s.Instance)
	case s.Namespace != "" && (!nameRE.MatchString(s.Namespace) || len(s.Namespace) > 63):
		return fmt.Errorf("--namespace %q is not a Kubernetes namespace name", s.Namespace)
	case s.CPUs < 1:
		return fmt.Errorf("--cpus %d: want at least 1", s.CPUs)
	case s.Memory < 256<<20:
		return fmt.Errorf("--memory %d bytes: want at least 256 MiB", s.Memory)
	case !s.Ephemeral && s.Disk < 1<<30:
		return fmt.Errorf("--disk %d bytes: want at least 1 GiB", s.Disk)
	case s.CloneOf != "" && (!nameRE.MatchString(s.CloneOf) || len(s.CloneOf) > 40 || s.CloneOf == s.Instance):
		return fmt.Errorf("clone of %q: want the name of another instance on the cluster (at most 40 lowercase letters, digits and dashes)", s.CloneOf)
	case s.CloneOf != "" && s.Ephemeral:
		return fmt.Errorf("instance %s is both a clone of %s's disk and ephemeral (a container disk): it can be only one", s.Instance, s.CloneOf)
	case s.CloneOf != "" && s.Namespace == "":
		return fmt.Errorf("instance %s clones %s's disk: give the namespace both are in (--namespace)", s.Instance, s.CloneOf)
	case s.Image == "":
		return fmt.Errorf("no --image: the cluster boots a container disk image, e.g. quay.io/containerdisks/ubuntu:22.04")
	case s.Arch != "" && s.Arch != "amd64" && s.Arch != "arm64":
		return fmt.Errorf("--arch %q: want amd64 or arm64", s.Arch)
	case s.MAC != "":
		if mac, err := net.ParseMAC(s.MAC); err != nil || len(mac) != 6 {
			return fmt.Errorf("guest MAC %q: want six bytes, like 52:54:00:12:34:56", s.MAC)
		}
	}
	return nil
}

// Name is the VirtualMachine's (and its instance's, and its pod's
// prefix).
func (s Spec) Name() string { return "cowork-" + s.Instance }

// CloudInitSecret names the Secret that holds the guest's NoCloud
// user-data and network-config. A Secret rather than the VM's spec:
// KubeVirt takes at most 2 KiB of user-data inline, and what provisions
// the guest stays out of everything that can read VMs.
func (s Spec) CloudInitSecret() string { return s.Name() + cloudInitSuffix }

// RootDataVolume names the DataVolume (and its PVC) of the instance's
// root disk.
func (s Spec) RootDataVolume() string { return rootDataVolume(s.Instance) }

// rootDataVolume names the root disk's DataVolume of instance.
func rootDataVolume(instance string) string { return "cowork-" + instance + "-root" }

// rootSource is where CDI fills the root disk from: the source
// instance's PVC for a clone, else the registry image.
func (s Spec) rootSource() *cdiv1.DataVolumeSource {
	if s.CloneOf != "" {
		return &cdiv1.DataVolumeSource{PVC: &cdiv1.DataVolumeSourcePVC{Namespace: s.Namespace, Name: rootDataVolume(s.CloneOf)}}
	}
	url := "docker://" + s.Image
	return &cdiv1.DataVolumeSource{Registry: &cdiv1.DataVolumeSourceRegistry{URL: &url}}
}

func (s Spec) labels() map[string]string {
	return map[string]string{LabelManagedBy: managedBy, LabelInstance: s.Instance}
}

// VirtualMachine is the instance's VM: its CPUs and memory, its root disk,
// the cloud-init seed from CloudInitSecret, a vsock device for the agent,
// and one NIC on the pod network, whose egress the namespace's
// NetworkPolicy confines to cowork's proxy. It is created halted: Start
// runs it.
func VirtualMachine(s Spec) (*kvv1.VirtualMachine, error) {
	if err := s.Check(); err != nil {
		return nil, err
	}
	halted := kvv1.RunStrategyHalted
	yes := true
	mem := resource.NewQuantity(s.Memory, resource.BinarySI)
	root := kvv1.Volume{Name: "root"}
	var templates []kvv1.DataVolumeTemplateSpec
	if s.Ephemeral {
		root.VolumeSource = kvv1.VolumeSource{ContainerDisk: &kvv1.ContainerDiskSource{Image: s.Image}}
	} else {
		templates = []kvv1.DataVolumeTemplateSpec{{
			ObjectMeta: metav1.ObjectMeta{Name: s.RootDataVolume(), Labels: s.labels()},
			Spec: cdiv1.DataVolumeSpec{
				Source: s.rootSource(),
				Storage: &cdiv1.StorageSpec{
					AccessModes: []corev1.PersistentVolumeAccessMode{corev1.ReadWriteOnce},
					Resources: corev1.VolumeResourceRequirements{Requests: corev1.ResourceList{
						corev1.ResourceStorage: *resource.NewQuantity(s.Disk, resource.BinarySI),
					}},
				},
			},
		}}
		root.VolumeSource = kvv1.VolumeSource{DataVolume: &kvv1.DataVolumeSource{Name: s.RootDataVolume()}}
	}
	secret := &corev1.LocalObjectReference{Name: s.CloudInitSecret()}
	vm := &kvv1.VirtualMachine{
		TypeMeta:   metav1.TypeMeta{APIVersion: kvv1.GroupVersion.String(), Kind: "VirtualMachine"},
		ObjectMeta: metav1.ObjectMeta{Name: s.Name(), Namespace: s.Namespace, Labels: s.labels()},
		Spec: kvv1.VirtualMachineSpec{
			RunStrategy:         &halted,
			DataVolumeTemplates: templates,
			Template: &kvv1.VirtualMachineInstanceTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: s.labels()},
				Spec: kvv1.VirtualMachineInstanceSpec{
					Architecture: s.Arch,
					Domain: kvv1.DomainSpec{
						CPU:    &kvv1.CPU{Cores: uint32(s.CPUs)},
						Memory: &kvv1.Memory{Guest: mem},
						Resources: kvv1.ResourceRequirements{
							Requests: corev1.ResourceList{corev1.ResourceMemory: *mem},
						},
						Devices: kvv1.Devices{
							AutoattachVSOCK: &yes,
							Disks: []kvv1.Disk{
								{Name: "root", DiskDevice: kvv1.DiskDevice{Disk: &kvv1.DiskTarget{Bus: kvv1.DiskBusVirtio}}},
								{Name: "cidata", DiskDevice: kvv1.DiskDevice{Disk: &kvv1.DiskTarget{Bus: kvv1.DiskBusVirtio}}},
							},
							Interfaces: []kvv1.Interface{{
								Name:                   "default",
								MacAddress:             s.MAC,
								InterfaceBindingMethod: kvv1.InterfaceBindingMethod{Masquerade: &kvv1.InterfaceMasquerade{}},
							}},
						},
					},
					Networks: []kvv1.Network{{Name: "default", NetworkSource: kvv1.NetworkSource{Pod: &kvv1.PodNetwork{}}}},
					Volumes: []kvv1.Volume{root, {
						Name: "cidata",
						VolumeSource: kvv1.VolumeSource{CloudInitNoCloud: &kvv1.CloudInitNoCloudSource{
							UserDataSecretRef:    secret,
							NetworkDataSecretRef: secret,
						}},
					}},
				},
			},
		},
	}
	return vm, nil
}

// CloudInit is the Secret VirtualMachine's seed comes from: KubeVirt reads
// the keys userdata and networkdata of a NoCloud secretRef.
func CloudInit(s Spec, userData, networkData []byte) *corev1.Secret {
	return &corev1.Secret{
		TypeMeta:   metav1.TypeMeta{APIVersion: "v1", Kind: "Secret"},
		ObjectMeta: metav1.ObjectMeta{Name: s.CloudInitSecret(), Namespace: s.Namespace, Labels: s.labels()},
		Type:       corev1.SecretTypeOpaque,
		Data:       map[string][]byte{"userdata": userData, "networkdata": networkData},
	}
}
