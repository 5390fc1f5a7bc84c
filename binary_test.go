package cowork

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/coworkhq/cowork/hostd/instance"
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
		{"echo 'not json'\n", `answered "not json"`},
	} {
		t.Setenv(hostdwire.Env, hostdScript(t, t.TempDir(), c.script))
		if _, err := Inspect(context.Background(), "/a/img", ""); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%q: %v; want %q", c.script, err, c.want)
		}
	}
}

// The daemon beside the running program wins over PATH, found through a
// symlink to the program; a relative $COWORK_HOSTD comes back absolute,
// since the daemon is launched from "/".
func TestFindHostdBesideAndRelative(t *testing.T) {
	dir := t.TempDir()
	t.Setenv("PATH", t.TempDir())
	exe := filepath.Join(dir, "cowork")
	os.WriteFile(exe, []byte("#!/bin/sh\n"), 0o700)
	want := hostdScript(t, dir, "exit 0\n")
	link := filepath.Join(t.TempDir(), "cowork")
	if err := os.Symlink(exe, link); err != nil {
		t.Fatal(err)
	}
	for _, from := range []string{exe, link} {
		if got, err := findHostd("", from); err != nil || got != want {
			t.Errorf("from %s: %q %v, want %q", from, got, err, want)
		}
	}
	t.Chdir(dir)
	if got, err := findHostd(hostdwire.Binary, ""); err != nil || got != want {
		t.Errorf("relative $%s: %q %v, want %q", hostdwire.Env, got, err, want)
	}
}

// A $COWORK_HOSTD that names cowork itself is refused, not asked (it
// would ask itself again, without end).
func TestAskBinaryRefusesItself(t *testing.T) {
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	t.Setenv(hostdwire.Env, self)
	if _, _, err := HostdVersion(context.Background()); err == nil || !strings.Contains(err.Error(), "is this cowork, not its daemon") {
		t.Fatalf("asking itself: %v", err)
	}
}

// A daemon that refuses `run` (exit 2) is named as another build.
func TestStartNamesADaemonFromAnotherBuild(t *testing.T) {
	newInstance(t)
	exe := hostdScript(t, t.TempDir(), "echo 'unknown command \"run\"' >&2; exit 2\n")
	err := Start(context.Background(), exe, instance.DefaultName, nil)
	if err == nil || !strings.Contains(err.Error(), "is from another build than this cowork") {
		t.Fatalf("%v", err)
	}
}

// HostdVersion names the binary it asked, for `cowork version`.
func TestHostdVersionNamesTheBinary(t *testing.T) {
	bin := hostdScript(t, t.TempDir(), `echo '{"version":"1.2.3","commit":"abc","agents":[{"arch":"arm64","size":1,"sha256":"00"}]}'`+"\n")
	t.Setenv(hostdwire.Env, bin)
	path, v, err := HostdVersion(context.Background())
	if err != nil || path != bin || v.Version != "1.2.3" || v.Commit != "abc" || len(v.Agents) != 1 {
		t.Fatalf("%q %+v %v", path, v, err)
	}
}

type progressFunc func(done, total int64)

func (f progressFunc) Update(done, total int64) { f(done, total) }

// An image command's progress reaches the Progress of its step and its
// last line is the result; its failure is its own message, without the
// binary's name before it, and a binary that does not know the command
// is named as another build.
func TestImageCommands(t *testing.T) {
	dir := t.TempDir()
	t.Setenv(hostdwire.Env, hostdScript(t, dir, `echo "$@" > `+filepath.Join(dir, "args")+`
echo '{"phase":"download","done":5,"total":10}'
echo 'garbage'
echo '{"phase":"verify","done":10,"total":10}'
echo '{"path":"/cache/img"}'
`))
	var got []string
	path, err := Fetch(context.Background(), "https://x/img", "abc", "/cache", func(phase string) Progress {
		return progressFunc(func(done, total int64) { got = append(got, fmt.Sprintf("%s %d/%d", phase, done, total)) })
	})
	if err != nil || path != "/cache/img" || strings.Join(got, ",") != "download 5/10,verify 10/10" {
		t.Fatalf("fetch: %q %v, progress %q", path, err, got)
	}
	if b, _ := os.ReadFile(filepath.Join(dir, "args")); string(b) != "fetch --url https://x/img --dir /cache --sha256 abc\n" {
		t.Errorf("fetch ran %q", b)
	}

	t.Setenv(hostdwire.Env, hostdScript(t, t.TempDir(), "echo 'cowork-hostd: image img.raw: sha256 is 00, want ff' >&2; exit 1\n"))
	if err := Verify(context.Background(), "img.raw", "ff", nil); err == nil || err.Error() != "image img.raw: sha256 is 00, want ff" {
		t.Errorf("a failed verify: %v", err)
	}
	t.Setenv(hostdwire.Env, hostdScript(t, t.TempDir(), "echo 'cowork-hostd: unknown command' >&2; exit 2\n"))
	if _, err := makeDisk(context.Background(), nil)(instance.Sources{Image: "a"}, instance.Paths("b"), 1); err == nil || !strings.Contains(err.Error(), "from another build than this cowork") {
		t.Errorf("an older daemon binary: %v", err)
	}
}
