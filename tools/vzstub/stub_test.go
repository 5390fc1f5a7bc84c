package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// fakeModule is a cgo module shaped like vz (see its fake.go).
const fakeModule = "testdata/fakevz"

// generateFake stubs the fake module into a temporary directory.
func generateFake(t *testing.T) string {
	t.Helper()
	out := filepath.Join(t.TempDir(), "stub")
	res, err := generate(fakeModule, out)
	if err != nil {
		t.Fatalf("generate: %v", err)
	}
	if res.module != "example.com/fakevz" {
		t.Errorf("module = %q", res.module)
	}
	return out
}

func TestGenerateSelectsDarwinArm64Files(t *testing.T) {
	out := generateFake(t)
	for _, want := range []string{"go.mod", "fake.go", "fake_arm64.go", ctypesFile, "internal/cobj/cobj.go", "internal/cobj/" + ctypesFile, markerFile} {
		if _, err := os.Stat(filepath.Join(out, want)); err != nil {
			t.Errorf("stub lacks %s: %v", want, err)
		}
	}
	// Other OSes and architectures, unset tags, tests and packages the
	// root does not import are left out.
	for _, unwanted := range []string{"fake_amd64.go", "fake_linux.go", "debug.go", "fake_test.go", "internal/unused"} {
		if _, err := os.Stat(filepath.Join(out, unwanted)); err == nil {
			t.Errorf("stub has %s, which does not build for darwin/arm64 or is not needed", unwanted)
		}
	}
}

func TestGenerateStubsBodiesAndC(t *testing.T) {
	out := generateFake(t)
	data, err := os.ReadFile(filepath.Join(out, "fake.go"))
	if err != nil {
		t.Fatal(err)
	}
	src := string(data)
	for _, bad := range []string{`import "C"`, "C.", "//go:build", "//export", "strconv", "return", "errors.New(\"nope\")\n\tx"} {
		if strings.Contains(src, bad) {
			t.Errorf("stub still contains %q:\n%s", bad, src)
		}
	}
	for _, want := range []string{
		"DO NOT EDIT.",
		`func NewThing(name string, mode Mode) (*Thing, error) { panic("vzstub") }`,
		`func (t *Thing) Name() (name string) { panic("vzstub") }`,
		`func (t *Thing) Raw() _Ctype_uintptr_t { panic("vzstub") }`,
		`func fakeCallback(code _Ctype_int, msg *_Ctype_char) _Ctype_int { panic("vzstub") }`,
		`var answer = func() int { panic("vzstub") }`,
		`var ErrNope = errors.New("nope")`, // initialisers are kept, with their imports
		"func init() {}",                   // linking the stub must not panic
		"handle _Ctype_uintptr_t",
		"flat   *_Ctype_flat",
		"ModeB",
	} {
		if !strings.Contains(src, want) {
			t.Errorf("stub lacks %q:\n%s", want, src)
		}
	}
	ctypes, err := os.ReadFile(filepath.Join(out, ctypesFile))
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"_Ctype_int       int32", "_Ctype_uintptr_t uint64", "_Ctype_char      int8", "_Ctype_flat      struct{}"} {
		if !strings.Contains(string(ctypes), want) {
			t.Errorf("C stand-ins lack %q:\n%s", want, ctypes)
		}
	}
}

func TestGenerateRejectsCValuesInInitialisers(t *testing.T) {
	src := t.TempDir()
	write(t, src, "go.mod", "module example.com/cvalue\n\ngo 1.22\n")
	write(t, src, "c.go", "package cvalue\n\n// #define LIMIT 4\nimport \"C\"\n\nconst Limit = C.LIMIT\n")
	_, err := generate(src, filepath.Join(t.TempDir(), "out"))
	if err == nil || !strings.Contains(err.Error(), "C.LIMIT") {
		t.Fatalf("generate = %v, want an error naming C.LIMIT", err)
	}
}

func TestGenerateRefusesToDeleteForeignDirectory(t *testing.T) {
	out := t.TempDir()
	write(t, out, "precious.txt", "keep me")
	if _, err := generate(fakeModule, out); err == nil || !strings.Contains(err.Error(), "refusing") {
		t.Fatalf("generate into a foreign directory = %v, want a refusal", err)
	}
	if _, err := os.Stat(filepath.Join(out, "precious.txt")); err != nil {
		t.Fatalf("foreign file was removed: %v", err)
	}
	// An earlier stub, on the other hand, is replaced.
	stub := generateFake(t)
	write(t, stub, "stale.go", "package fakevz\n")
	if _, err := generate(fakeModule, stub); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(stub, "stale.go")); err == nil {
		t.Error("a stale file of the earlier stub survived")
	}
}

func TestGuessPackageName(t *testing.T) {
	for path, want := range map[string]string{
		"fmt":                       "fmt",
		"net/http":                  "http",
		"golang.org/x/mod/semver":   "semver",
		"github.com/Code-Hex/vz/v3": "vz",
		"github.com/Code-Hex/go-infinity-channel": "infinitychannel",
		"gopkg.in/yaml.v3":                        "yaml",
		"github.com/mattn/go-isatty":              "isatty",
	} {
		if got := guessPackageName(path); got != want {
			t.Errorf("guessPackageName(%q) = %q, want %q", path, got, want)
		}
	}
}

func TestRunUsage(t *testing.T) {
	for _, args := range [][]string{nil, {"bogus"}, {"generate"}, {"compare", "-real", "x"}, {"locate", "extra"}} {
		var out, errOut strings.Builder
		err := run(args, &out, &errOut)
		if _, ok := err.(usageError); !ok {
			t.Errorf("run(%q) = %v, want a usage error", args, err)
		}
	}
}

func write(t *testing.T, dir, name, content string) {
	t.Helper()
	if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}
