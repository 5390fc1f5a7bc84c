package cowork

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/coworkhq/cowork/internal/hostdwire"
)

// hostdScript writes a script that stands in for cowork-hostd.
func hostdScript(t *testing.T, dir, script string) string {
	t.Helper()
	p := filepath.Join(dir, hostdwire.Binary)
	if err := os.WriteFile(p, []byte("#!/bin/sh\n"+script), 0o700); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestHostdBinaryLookup(t *testing.T) {
	dir := t.TempDir()
	t.Setenv(hostdwire.Env, filepath.Join(dir, "missing"))
	if _, err := HostdBinary(); err == nil || !strings.Contains(err.Error(), "$"+hostdwire.Env) {
		t.Errorf("a $%s that does not exist: %v", hostdwire.Env, err)
	}
	// Not beside the test binary: PATH is the last resort, then a clear error.
	t.Setenv(hostdwire.Env, "")
	t.Setenv("PATH", dir)
	if _, err := HostdBinary(); err == nil || !strings.Contains(err.Error(), "install both binaries of one build side by side") {
		t.Errorf("no cowork-hostd anywhere: %v", err)
	}
	want := hostdScript(t, dir, "exit 0\n")
	if got, err := HostdBinary(); err != nil || got != want {
		t.Errorf("on PATH: %q %v, want %q", got, err, want)
	}
}

func TestInspectAsksTheBinary(t *testing.T) {
	dir := t.TempDir()
	args := filepath.Join(dir, "args")
	t.Setenv(hostdwire.Env, hostdScript(t, dir, `echo "$@" > `+args+`
echo '{"image":{"format":"qcow2","arch":"arm64"},"kernel":{"arch":"amd64"}}'
`))
	got, err := Inspect(context.Background(), "/a/img", "/a/vmlinuz")
	if err != nil || got.Image == nil || got.Image.Format != "qcow2" || got.Image.Arch != "arm64" || got.Kernel == nil || got.Kernel.Arch != "amd64" {
		t.Fatalf("Inspect: %+v %v", got, err)
	}
	if b, _ := os.ReadFile(args); strings.TrimSpace(string(b)) != "inspect --image /a/img --kernel /a/vmlinuz" {
		t.Errorf("the binary was asked %q", b)
	}
}

// A daemon binary from another build, or one that fails, is named with
// what to do; a garbled answer is an error, not zero facts.
func TestInspectFailures(t *testing.T) {
	for _, c := range []struct{ script, want string }{
		{"echo 'unknown command' >&2; exit 2\n", "is from another build than this cowork"},
		{"echo 'boom' >&2; exit 1\n", "inspect: boom"},
		{"echo 'not json'\n", `answered "not json\n"`},
	} {
		t.Setenv(hostdwire.Env, hostdScript(t, t.TempDir(), c.script))
		if _, err := Inspect(context.Background(), "/a/img", ""); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%q: %v; want %q", c.script, err, c.want)
		}
	}
}
