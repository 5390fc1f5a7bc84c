package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// hostEnv builds the fake module's dependencies (errors, strconv, sync)
// for the host, as `go test` already has: their API does not depend on the
// platform, and a cold build of them for darwin would take half a minute.
var hostEnv []string

func TestCompareFakeMatches(t *testing.T) {
	out := generateFake(t)
	rep, err := compareModules(fakeModule, out, hostEnv)
	if err != nil {
		t.Fatal(err)
	}
	if len(rep.diffs) > 0 {
		t.Fatalf("fresh stub differs:\n%s", strings.Join(rep.diffs, "\n"))
	}
	// Thing.Raw and cobj.UUID mention C types.
	if rep.packages != 2 || rep.ctyped != 2 {
		t.Errorf("compared %d packages, %d C-typed entries; want 2 and 2", rep.packages, rep.ctyped)
	}
}

// TestCompareDetectsDrift edits a fresh stub the ways it could drift from
// the real API and checks that each edit is reported.
func TestCompareDetectsDrift(t *testing.T) {
	for _, tc := range []struct {
		name, file string
		edits      []string // old, new, old, new...
		want       string
	}{
		{"parameter type", "fake.go", []string{"func NewThing(name string,", "func NewThing(name []byte,"}, "func NewThing: real func(name string"},
		{"missing method", "fake.go", []string{`func (t *Thing) Raw() _Ctype_uintptr_t { panic("vzstub") }`, ""}, "method Raw: missing from the stub"},
		{"receiver kind", "fake.go", []string{"func (t Thing) Ptr()", "func (t *Thing) Ptr()"}, "method Ptr: real func() unsafe.Pointer on T, stub func() unsafe.Pointer on *T"},
		// Without the assertion `var _ Device = (*Thing)(nil)` the stub
		// still type-checks; only the comparison sees the lost method.
		{"unexported method of a sealed interface", "fake.go", []string{`func (*Thing) device() { panic("vzstub") }`, "", "var _ Device = (*Thing)(nil)\n", ""}, "device: missing from the stub"},
		{"constant value", "fake.go", []string{"ModeA Mode = iota + 1", "ModeA Mode = iota + 2"}, "const ModeA: real example.com/fakevz.Mode = 1, stub example.com/fakevz.Mode = 2"},
		{"promoted field", "fake.go", []string{"Label string", "Label []string"}, "field base.Label"},
		{"extra function", "fake.go", []string{"func Map[", "func Extra() {}\n\nfunc Map["}, "func Extra: only in the stub"},
		{"C type where Go was", "fake.go", []string{"Count  int", "Count  _Ctype_int"}, "field Count: real int, stub invalid type"},
		{"internal package", "internal/cobj/cobj.go", []string{"func UUID() *_Ctype_char", "func UUID() string"}, "cobj: func UUID: real func() invalid type, stub func() string"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			out := generateFake(t)
			for i := 0; i < len(tc.edits); i += 2 {
				edit(t, filepath.Join(out, tc.file), tc.edits[i], tc.edits[i+1])
			}
			rep, err := compareModules(fakeModule, out, hostEnv)
			if err != nil {
				t.Fatal(err)
			}
			all := strings.Join(rep.diffs, "\n")
			if !strings.Contains(all, tc.want) {
				t.Fatalf("diffs do not report %q:\n%s", tc.want, all)
			}
		})
	}
}

func TestCompareRejectsStubThatDoesNotTypeCheck(t *testing.T) {
	out := generateFake(t)
	edit(t, filepath.Join(out, "fake.go"), "Count  int", "Count  undefinedType")
	if _, err := compareModules(fakeModule, out, hostEnv); err == nil || !strings.Contains(err.Error(), "undefinedType") {
		t.Fatalf("compare = %v, want a type error naming undefinedType", err)
	}
}

// TestRealVZ runs generate and compare on the pinned vz itself when its
// source is in the module cache (it is after `go mod download`), and checks
// that a changed signature in the stub is caught there too.
//
// It needs export data of net/http and more for darwin/arm64, minutes to
// build on a cold cache, so it runs only with VZSTUB_REAL=1, which
// hack/check-darwin.sh sets after its own comparison has built that data.
func TestRealVZ(t *testing.T) {
	if os.Getenv("VZSTUB_REAL") != "1" {
		t.Skip("set VZSTUB_REAL=1 to run (hack/check-darwin.sh does)")
	}
	src, _, err := locateModule(vzModule)
	if err != nil {
		t.Skipf("vz not available: %v", err)
	}
	out := filepath.Join(t.TempDir(), "vz")
	if _, err := generate(src, out); err != nil {
		t.Fatal(err)
	}
	rep, err := compareModules(src, out, depsEnv)
	if err != nil {
		t.Fatal(err)
	}
	if len(rep.diffs) > 0 {
		t.Fatalf("fresh stub differs:\n%s", strings.Join(rep.diffs, "\n"))
	}
	if rep.entries < 500 {
		t.Errorf("only %d surface entries; vz v3 has hundreds", rep.entries)
	}
	edit(t, filepath.Join(out, "bootloader.go"), "func NewLinuxBootLoader(vmlinuz string,", "func NewLinuxBootLoader(vmlinuz []byte,")
	rep, err = compareModules(src, out, depsEnv)
	if err != nil {
		t.Fatal(err)
	}
	if len(rep.diffs) != 1 || !strings.Contains(rep.diffs[0], "func NewLinuxBootLoader") {
		t.Fatalf("diffs = %q, want exactly NewLinuxBootLoader", rep.diffs)
	}
}

// edit replaces old with new in file, failing if old is not there.
func edit(t *testing.T, file, old, new string) {
	t.Helper()
	data, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(data), old) {
		t.Fatalf("%s does not contain %q:\n%s", file, old, data)
	}
	if err := os.WriteFile(file, []byte(strings.Replace(string(data), old, new, 1)), 0o644); err != nil {
		t.Fatal(err)
	}
}
