package agentwire

import (
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// This package exists so that the two ends of the agent channel need not
// import each other: the guest's code (the agent, and the internal pieces
// both sides share) links nothing of hostd, and hostd's backends link
// nothing of the guest's. An import across that line would bring it back
// quietly, so it is checked here, with what the Go tool reports (non-test
// imports; vz also as it builds on a Mac).
func TestNeitherSideLinksTheOther(t *testing.T) {
	const mod = "github.com/coworkhq/cowork/"
	noteSources(t)
	for _, c := range []struct {
		goos     string
		pkgs     []string
		forbid   string
		relation string
	}{
		{"", []string{"./guestagent/...", "./internal/...", "./cmd/cowork-agent"}, mod + "hostd", "the guest's side and internal"},
		{"linux", []string{"./hostd/qemu", "./hostd/vz"}, mod + "guestagent", "hostd's backends"},
		{"darwin", []string{"./hostd/vz"}, mod + "guestagent", "hostd's vz backend on macOS"},
	} {
		deps := goList(t, c.goos, c.pkgs)
		for pkg, imports := range deps {
			for _, d := range imports {
				if d == c.forbid || strings.HasPrefix(d, c.forbid+"/") {
					t.Errorf("%s: %s links %s; take what both sides need from internal/agentwire instead", c.relation, pkg, d)
				}
			}
		}
	}
}

// noteSources looks at every Go file of the module, so that go test's
// cache, which sees what a test reads but not what its go list child does,
// runs this test again after any of them changes.
func noteSources(t *testing.T) {
	t.Helper()
	err := filepath.WalkDir("../..", func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() && (d.Name() == ".git" || d.Name() == "testdata") {
			return filepath.SkipDir
		}
		if !d.IsDir() && (strings.HasSuffix(path, ".go") || d.Name() == "go.mod") {
			_, err = os.Stat(path)
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
}

// goList maps each package matched by patterns to its transitive imports.
func goList(t *testing.T, goos string, patterns []string) map[string][]string {
	t.Helper()
	// go test puts the GOROOT/bin of the go command running it first in
	// PATH, so "go" is that same go command.
	cmd := exec.Command("go", append([]string{"list", "-f", `{{.ImportPath}} {{join .Deps " "}}`}, patterns...)...)
	cmd.Dir = "../.."
	cmd.Env = os.Environ()
	if goos != "" {
		// As a build for goos with cgo links it (vz is cgo on macOS).
		cmd.Env = append(cmd.Env, "GOOS="+goos, "CGO_ENABLED=1")
	}
	out, err := cmd.Output()
	if err != nil {
		msg := err.Error()
		if ee, ok := err.(*exec.ExitError); ok {
			msg += ": " + string(ee.Stderr)
		}
		t.Fatalf("go list %s (GOOS=%s): %s", strings.Join(patterns, " "), goos, msg)
	}
	deps := map[string][]string{}
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		f := strings.Fields(line)
		if len(f) == 0 {
			continue
		}
		deps[f[0]] = f[1:]
	}
	if len(deps) < len(patterns) {
		t.Fatalf("go list found %d packages for %d patterns: %s", len(deps), len(patterns), out)
	}
	return deps
}
