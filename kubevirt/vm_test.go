package kubevirt

import (
	"encoding/json"
	"strings"
	"testing"

	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/kube-openapi/pkg/common"
	"k8s.io/kube-openapi/pkg/validation/spec"
	"k8s.io/kube-openapi/pkg/validation/strfmt"
	"k8s.io/kube-openapi/pkg/validation/validate"
	kvv1 "kubevirt.io/api/core/v1"
	"kubevirt.io/client-go/api"
	cdiv1 "kubevirt.io/containerized-data-importer-api/pkg/apis/core/v1beta1"
)

func testSpec() Spec {
	return Spec{Instance: "box", Namespace: "sandboxes", CPUs: 4, Memory: 4 << 30, Disk: 10 << 30, Image: "quay.io/containerdisks/ubuntu:22.04", Arch: "arm64", MAC: "52:54:00:12:34:56"}
}

// kubevirtSchema validates objects against the OpenAPI definitions
// KubeVirt publishes for its API (kubevirt.io/client-go/api, generated
// from the types the API server serves), with their references inlined:
// kube-openapi's validator follows none.
func kubevirtSchema(t *testing.T, def string) *validate.SchemaValidator {
	t.Helper()
	ref := func(path string) spec.Ref {
		return spec.MustCreateRef("#/definitions/" + common.EscapeJsonPointer(path))
	}
	defs := map[string]spec.Schema{}
	for name, d := range api.GetOpenAPIDefinitions(ref) {
		defs[name] = d.Schema
	}
	if _, ok := defs[def]; !ok {
		t.Fatalf("KubeVirt's OpenAPI definitions lack %s", def)
	}
	r := &inliner{defs: defs, done: map[string]*spec.Schema{}, open: map[string]bool{}}
	return validate.NewSchemaValidator(r.named(def), nil, "", strfmt.Default)
}

// inliner replaces each reference by the definition it names. A
// definition met again inside itself (a recursive type) is left open: it
// takes anything there.
type inliner struct {
	defs map[string]spec.Schema
	done map[string]*spec.Schema
	open map[string]bool
}

func (r *inliner) named(name string) *spec.Schema {
	if s, ok := r.done[name]; ok {
		return s
	}
	if r.open[name] {
		return &spec.Schema{}
	}
	r.open[name] = true
	d := r.defs[name]
	s := r.inline(&d)
	delete(r.open, name)
	r.done[name] = s
	return s
}

func (r *inliner) inline(s *spec.Schema) *spec.Schema {
	if p := s.Ref.String(); p != "" {
		name := strings.NewReplacer("~1", "/", "~0", "~").Replace(strings.TrimPrefix(p, "#/definitions/"))
		return r.named(name)
	}
	out := *s
	if s.Properties != nil {
		out.Properties = map[string]spec.Schema{}
		for k, v := range s.Properties {
			out.Properties[k] = *r.inline(&v)
		}
	}
	if s.Items != nil && s.Items.Schema != nil {
		out.Items = &spec.SchemaOrArray{Schema: r.inline(s.Items.Schema)}
	}
	if s.AdditionalProperties != nil && s.AdditionalProperties.Schema != nil {
		out.AdditionalProperties = &spec.SchemaOrBool{Allows: true, Schema: r.inline(s.AdditionalProperties.Schema)}
	}
	for i, list := range [][]spec.Schema{s.AllOf, s.OneOf, s.AnyOf} {
		var inlined []spec.Schema
		for _, v := range list {
			inlined = append(inlined, *r.inline(&v))
		}
		switch i {
		case 0:
			out.AllOf = inlined
		case 1:
			out.OneOf = inlined
		case 2:
			out.AnyOf = inlined
		}
	}
	return &out
}

func unstructuredOf(t *testing.T, obj runtime.Object) map[string]any {
	t.Helper()
	u, err := toUnstructured(obj)
	if err != nil {
		t.Fatal(err)
	}
	return u.Object
}

// The VM the backend makes passes KubeVirt's own schema, and the schema
// check is no formality: a VM with a field of the wrong type fails it.
func TestVirtualMachineMatchesKubeVirtsSchema(t *testing.T) {
	v := kubevirtSchema(t, "kubevirt.io/api/core/v1.VirtualMachine")
	for _, kind := range []string{"imported", "ephemeral", "clone"} {
		s := testSpec()
		s.Ephemeral = kind == "ephemeral"
		if kind == "clone" {
			s.CloneOf = "golden"
		}
		vm, err := VirtualMachine(s)
		if err != nil {
			t.Fatal(err)
		}
		u := unstructuredOf(t, vm)
		if r := v.Validate(u); !r.IsValid() {
			t.Fatalf("%s: %v", kind, r.AsError())
		}
		if kind == "clone" { // the schema knows the clone's source: a broken one fails
			bad := unstructuredOf(t, vm)
			dv := bad["spec"].(map[string]any)["dataVolumeTemplates"].([]any)[0].(map[string]any)
			dv["spec"].(map[string]any)["source"].(map[string]any)["pvc"] = map[string]any{"name": int64(7)}
			if r := v.Validate(bad); r.IsValid() {
				t.Fatal("a clone whose source PVC's name is a number passed the schema")
			}
		}
		u["spec"].(map[string]any)["template"].(map[string]any)["spec"].(map[string]any)["domain"].(map[string]any)["cpu"] = map[string]any{"cores": "four"}
		if r := v.Validate(u); r.IsValid() {
			t.Fatal("a VM whose cpu cores is a string passed the schema: it checks nothing")
		}
	}
}

func TestVirtualMachine(t *testing.T) {
	s := testSpec()
	vm, err := VirtualMachine(s)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := json.Marshal(vm)
	tmpl := vm.Spec.Template.Spec
	switch {
	case vm.Name != "cowork-box" || vm.Namespace != "sandboxes" || vm.Labels[LabelInstance] != "box" || tmpl.Domain.Devices.Disks == nil:
		t.Fatalf("names and labels: %s", b)
	case vm.Spec.Template.ObjectMeta.Labels[LabelInstance] != "box" || vm.Spec.Template.ObjectMeta.Labels[LabelManagedBy] != "cowork":
		t.Fatalf("the VMI's pod must carry the labels the NetworkPolicy selects: %s", b)
	case *vm.Spec.RunStrategy != kvv1.RunStrategyHalted:
		t.Fatalf("made running: %s", b)
	case tmpl.Domain.CPU.Cores != 4 || tmpl.Domain.Memory.Guest.Value() != 4<<30:
		t.Fatalf("cpus and memory: %s", b)
	case tmpl.Domain.Devices.AutoattachVSOCK == nil || !*tmpl.Domain.Devices.AutoattachVSOCK:
		t.Fatalf("no vsock device for the agent: %s", b)
	case len(vm.Spec.DataVolumeTemplates) != 1 || vm.Spec.DataVolumeTemplates[0].Spec.Storage.Resources.Requests.Storage().Value() != 10<<30:
		t.Fatalf("root disk: %s", b)
	case *vm.Spec.DataVolumeTemplates[0].Spec.Source.Registry.URL != "docker://quay.io/containerdisks/ubuntu:22.04":
		t.Fatalf("root disk source: %s", b)
	case tmpl.Volumes[1].CloudInitNoCloud == nil || tmpl.Volumes[1].CloudInitNoCloud.UserDataSecretRef.Name != "cowork-box-cloudinit" || tmpl.Volumes[1].CloudInitNoCloud.UserData != "":
		t.Fatalf("the seed comes from the Secret, never inline: %s", b)
	case len(tmpl.Networks) != 1 || tmpl.Networks[0].Pod == nil || tmpl.Domain.Devices.Interfaces[0].Masquerade == nil:
		t.Fatalf("one NIC, masqueraded on the pod network: %s", b)
	}
	// Nothing in the VM gives the guest a way around the pod network.
	for _, bad := range []string{"hostNetwork", "hostPath", "multus", "bridge", "privileged"} {
		if strings.Contains(string(b), bad) {
			t.Errorf("the VM names %q: %s", bad, b)
		}
	}
	s.Ephemeral = true
	vm, _ = VirtualMachine(s)
	if vm.Spec.DataVolumeTemplates != nil || vm.Spec.Template.Spec.Volumes[0].ContainerDisk.Image != s.Image {
		t.Fatalf("ephemeral: %+v", vm.Spec)
	}
	s.Ephemeral, s.CloneOf = false, "golden"
	vm, _ = VirtualMachine(s)
	if src := vm.Spec.DataVolumeTemplates[0].Spec.Source; src.Registry != nil || src.PVC == nil || *src.PVC != (cdiv1.DataVolumeSourcePVC{Namespace: "sandboxes", Name: "cowork-golden-root"}) {
		t.Fatalf("a clone's root disk comes from its source's PVC, in its namespace: %+v", src)
	}
	if dv := vm.Spec.DataVolumeTemplates[0]; dv.Name != "cowork-box-root" || dv.Labels[LabelInstance] != "box" || dv.Spec.Storage.Resources.Requests.Storage().Value() != 10<<30 {
		t.Fatalf("a clone's root disk is its own, of its size: %+v", dv)
	}
	sec := CloudInit(s, []byte("#cloud-config\n"), []byte("version: 2\n"))
	if sec.Name != s.CloudInitSecret() || string(sec.Data["userdata"]) != "#cloud-config\n" || string(sec.Data["networkdata"]) != "version: 2\n" {
		t.Fatalf("%+v", sec)
	}
}

func TestSpecRefusesWhatKubernetesWould(t *testing.T) {
	for _, c := range []struct {
		change func(*Spec)
		want   string
	}{
		{func(s *Spec) { s.Instance = "Box" }, `instance name "Box" cannot name a Kubernetes object`},
		{func(s *Spec) { s.Instance = "a_b" }, "cannot name a Kubernetes object"},
		{func(s *Spec) { s.Instance = strings.Repeat("a", 41) }, "at most 40"},
		{func(s *Spec) { s.Namespace = "-x" }, `--namespace "-x"`},
		{func(s *Spec) { s.CPUs = 0 }, "--cpus 0"},
		{func(s *Spec) { s.Memory = 1 << 20 }, "want at least 256 MiB"},
		{func(s *Spec) { s.Disk = 1 << 20 }, "want at least 1 GiB"},
		{func(s *Spec) { s.Image = "" }, "no --image"},
		{func(s *Spec) { s.CloneOf = "Golden" }, `clone of "Golden"`},
		{func(s *Spec) { s.CloneOf = "../golden" }, "clone of"},
		{func(s *Spec) { s.CloneOf = strings.Repeat("a", 41) }, "clone of"},
		{func(s *Spec) { s.CloneOf = "box" }, "another instance"},
		{func(s *Spec) { s.CloneOf, s.Ephemeral = "golden", true }, "it can be only one"},
		{func(s *Spec) { s.CloneOf, s.Namespace = "golden", "" }, "give the namespace"},
	} {
		s := testSpec()
		c.change(&s)
		if _, err := VirtualMachine(s); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%+v: %v, want %q", s, err, c.want)
		}
	}
}
