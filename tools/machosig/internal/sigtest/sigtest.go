// Package sigtest builds the fixtures the machosig tests share: a tiny
// darwin binary from testdata/hello and the tools/sign command. Building both
// for real, rather than checking in binaries, keeps the tests honest about
// what the Go linker and quill write today; the signer lives in its own
// module, so it is built with `go -C tools/sign`, which downloads quill
// through the module proxy on a cold cache.
package sigtest

import (
	"encoding/binary"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
)

// Fixtures are built once per test process into a shared temporary folder.
var (
	once     sync.Once
	dir      string
	hello    string // darwin/arm64, signed ad hoc by the Go linker only
	hello64  string // darwin/amd64, which the Go linker leaves unsigned
	signer   string
	buildErr error
)

// RepoRoot is the cowork checkout the tests run in: the nearest folder above
// the working directory (the test's package) with cowork's go.mod.
func RepoRoot() string {
	dir, err := os.Getwd()
	if err != nil {
		return "."
	}
	for d := dir; ; d = filepath.Dir(d) {
		mod, err := os.ReadFile(filepath.Join(d, "go.mod"))
		if err == nil && strings.HasPrefix(string(mod), "module github.com/coworkhq/cowork\n") {
			return d
		}
		if filepath.Dir(d) == d {
			return dir
		}
	}
}

// Entitlements is the repository's entitlements.plist, which `make` signs with.
func Entitlements() string { return filepath.Join(RepoRoot(), "entitlements.plist") }

func build() {
	dir, buildErr = os.MkdirTemp("", "machosig-fixtures")
	if buildErr != nil {
		return
	}
	root := RepoRoot()
	hello = filepath.Join(dir, "hello")
	hello64 = filepath.Join(dir, "hello-amd64")
	signer = filepath.Join(dir, "sign")
	steps := []struct {
		dir  string
		env  []string
		args []string
	}{
		{root, []string{"CGO_ENABLED=0", "GOOS=darwin", "GOARCH=arm64"}, []string{"build", "-o", hello, "./tools/machosig/testdata/hello"}},
		{root, []string{"CGO_ENABLED=0", "GOOS=darwin", "GOARCH=amd64"}, []string{"build", "-o", hello64, "./tools/machosig/testdata/hello"}},
		// GOOS and GOARCH emptied: the signer runs here, whatever the test's env says.
		{filepath.Join(root, "tools", "sign"), []string{"GOOS=", "GOARCH=", "GOWORK=off"}, []string{"build", "-o", signer, "."}},
	}
	for _, s := range steps {
		if buildErr = run(s.dir, s.env, goCmd(), s.args...); buildErr != nil {
			return
		}
	}
}

// Binaries returns the linker-signed darwin/arm64 hello, the unsigned
// darwin/amd64 one, and the tools/sign command, building them on first use.
func Binaries(t testing.TB) (helloArm64, helloAmd64, sign string) {
	t.Helper()
	once.Do(build)
	if buildErr != nil {
		t.Fatalf("build fixtures: %v", buildErr)
	}
	return hello, hello64, signer
}

// Copy copies a fixture into the test's own folder so it can be changed.
func Copy(t testing.TB, src string) string {
	t.Helper()
	data, err := os.ReadFile(src)
	if err != nil {
		t.Fatal(err)
	}
	dst := filepath.Join(t.TempDir(), filepath.Base(src))
	if err := os.WriteFile(dst, data, 0o755); err != nil {
		t.Fatal(err)
	}
	return dst
}

// Sign returns a copy of the darwin/arm64 hello signed ad hoc by tools/sign
// with the given entitlements plist.
func Sign(t testing.TB, entitlements string) string {
	t.Helper()
	src, _, _ := Binaries(t)
	bin := Copy(t, src)
	SignFile(t, bin, entitlements)
	return bin
}

// SignFile signs bin ad hoc in place with tools/sign.
func SignFile(t testing.TB, bin, entitlements string) {
	t.Helper()
	_, _, sign := Binaries(t)
	if err := run("", nil, sign, "-entitlements", entitlements, bin); err != nil {
		t.Fatalf("sign: %v", err)
	}
}

// Universal writes a universal (fat) file of the given thin Mach-O files,
// each slice 16 KiB aligned, with the CPU types read from their headers.
func Universal(t testing.TB, thin ...string) string {
	t.Helper()
	const align = 1 << 14
	out := make([]byte, 8+20*len(thin))
	binary.BigEndian.PutUint32(out, 0xcafebabe)
	binary.BigEndian.PutUint32(out[4:], uint32(len(thin)))
	for i, p := range thin {
		data, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		for len(out)%align != 0 {
			out = append(out, 0)
		}
		arch := out[8+20*i:]
		binary.BigEndian.PutUint32(arch, binary.LittleEndian.Uint32(data[4:]))     // cputype
		binary.BigEndian.PutUint32(arch[4:], binary.LittleEndian.Uint32(data[8:])) // cpusubtype
		binary.BigEndian.PutUint32(arch[8:], uint32(len(out)))
		binary.BigEndian.PutUint32(arch[12:], uint32(len(data)))
		binary.BigEndian.PutUint32(arch[16:], 14)
		out = append(out, data...)
	}
	dst := filepath.Join(t.TempDir(), "hello-universal")
	if err := os.WriteFile(dst, out, 0o755); err != nil {
		t.Fatal(err)
	}
	return dst
}

// WritePlist writes an entitlements plist whose top-level dict is body.
func WritePlist(t testing.TB, body string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "entitlements.plist")
	doc := `<?xml version="1.0" encoding="UTF-8"?>
<!DOCTYPE plist PUBLIC "-//Apple//DTD PLIST 1.0//EN" "http://www.apple.com/DTDs/PropertyList-1.0.dtd">
<plist version="1.0">
<dict>
` + body + `
</dict>
</plist>
`
	if err := os.WriteFile(p, []byte(doc), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// goCmd is the go command: $GO, as hack/test.sh honours it, else go on PATH.
func goCmd() string {
	if g := os.Getenv("GO"); g != "" {
		return g
	}
	return "go"
}

func run(dir string, env []string, name string, args ...string) error {
	cmd := exec.Command(name, args...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), env...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		return &runError{cmd: name + " " + strings.Join(args, " "), out: string(out), err: err}
	}
	return nil
}

type runError struct {
	cmd, out string
	err      error
}

func (e *runError) Error() string { return e.cmd + ": " + e.err.Error() + "\n" + e.out }
func (e *runError) Unwrap() error { return e.err }

// Cleanup removes the shared fixtures; call it from TestMain after m.Run.
func Cleanup() {
	if dir != "" {
		os.RemoveAll(dir)
	}
}
