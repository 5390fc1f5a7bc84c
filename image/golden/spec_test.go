package golden

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"reflect"
	"testing"
)

// Equal specs have equal keys; a change to any field changes the key;
// the schema is always the package's.
func TestSpecKey(t *testing.T) {
	base := Spec{Arch: "arm64", ImageSHA256: sha([]byte("image")), User: "claude", UID: 1000, Provision: sha([]byte("script"))}
	if k1, k2 := base.Key(), base.Key(); k1 != k2 || !ValidKey(k1) {
		t.Fatalf("Key is not a stable 64-hex key: %q", base.Key())
	}
	copied := base
	if copied.Key() != base.Key() {
		t.Errorf("equal specs, different keys")
	}
	changes := map[string]func(*Spec){
		"Arch":         func(s *Spec) { s.Arch = "amd64" },
		"ImageSHA256":  func(s *Spec) { s.ImageSHA256 = sha([]byte("other image")) },
		"KernelSHA256": func(s *Spec) { s.KernelSHA256 = sha([]byte("kernel")) },
		"InitrdSHA256": func(s *Spec) { s.InitrdSHA256 = sha([]byte("initrd")) },
		"Cmdline":      func(s *Spec) { s.Cmdline = "console=hvc0" },
		"User":         func(s *Spec) { s.User = "root" },
		"UID":          func(s *Spec) { s.UID = 1001 },
		"Provision":    func(s *Spec) { s.Provision = sha([]byte("other script")) },
	}
	typ := reflect.TypeOf(Spec{})
	for i := 0; i < typ.NumField(); i++ {
		if f := typ.Field(i).Name; f != "Schema" && changes[f] == nil {
			t.Errorf("Spec.%s has no row here: add one", f)
		}
	}
	keys := map[string]string{base.Key(): "base"}
	for field, change := range changes {
		s := base
		change(&s)
		k := s.Key()
		if other, ok := keys[k]; ok {
			t.Errorf("changing %s gives the key of %s", field, other)
		}
		keys[k] = field
	}

	for _, schema := range []int{0, Schema + 1, -1} {
		s := base
		s.Schema = schema
		if s.Key() != base.Key() {
			t.Errorf("Schema %d in the spec changes the key", schema)
		}
	}
	s := base
	s.Schema = Schema
	b, _ := json.Marshal(s)
	sum := sha256.Sum256(b)
	if base.Key() != hex.EncodeToString(sum[:]) {
		t.Errorf("Key is not the sha256 of the spec's JSON with schema %d", Schema)
	}
}

func TestValidKey(t *testing.T) {
	k := testKey(1)
	for key, want := range map[string]bool{k: true, k[:63]: false, k + "0": false, "../" + k[3:]: false,
		"ABCDEF" + k[6:]: false, k[:63] + "\n": false, "": false} {
		if ValidKey(key) != want {
			t.Errorf("ValidKey(%q) = %v", key, !want)
		}
	}
}
