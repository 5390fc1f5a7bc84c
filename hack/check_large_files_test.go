// Package hack holds the build scripts; its tests run the ones whose
// verdicts matter (make lint's large-file check) against throwaway repos.
package hack

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// repo makes a git repository with the given files (name -> size) added to
// the index, and returns its path.
func repo(t *testing.T, files map[string]int) string {
	t.Helper()
	if _, err := exec.LookPath("git"); err != nil {
		if os.Getenv("COWORK_TEST_REQUIRE_TOOLS") != "" {
			t.Fatal("git is required")
		}
		t.Skip("no git")
	}
	dir := t.TempDir()
	git(t, dir, "init", "-q")
	for name, size := range files {
		p := filepath.Join(dir, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(strings.Repeat("x", size)), 0o644); err != nil {
			t.Fatal(err)
		}
		git(t, dir, "add", "--", name)
	}
	return dir
}

func git(t *testing.T, dir string, args ...string) {
	t.Helper()
	cmd := exec.Command("git", args...)
	cmd.Dir = dir
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("git %v: %v\n%s", args, err, out)
	}
}

// check runs the large-file check in dir and returns its exit code and stderr.
func check(t *testing.T, dir string, args ...string) (int, string) {
	t.Helper()
	return run(t, "check-large-files.sh", dir, args...)
}

// run runs a script of this folder in dir and returns its exit code and stderr.
func run(t *testing.T, name, dir string, args ...string) (int, string) {
	t.Helper()
	script, err := filepath.Abs(name)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(script, args...)
	cmd.Dir = dir
	var stderr strings.Builder
	cmd.Stderr = &stderr
	err = cmd.Run()
	if ee, ok := err.(*exec.ExitError); ok {
		return ee.ExitCode(), stderr.String()
	}
	if err != nil {
		t.Fatal(err)
	}
	return 0, stderr.String()
}

func TestLargeFileCheckPassesSmallFiles(t *testing.T) {
	dir := repo(t, map[string]int{"a.go": 10, "docs/at the limit.txt": 1000})
	// A big file that is not tracked is not the check's business.
	if err := os.WriteFile(filepath.Join(dir, "cowork-agent"), make([]byte, 5000), 0o755); err != nil {
		t.Fatal(err)
	}
	// A submodule is a commit in another repository, not a file here.
	git(t, dir, "update-index", "--add", "--cacheinfo", "160000,"+strings.Repeat("ab", 20)+",vendor/sub")
	if code, out := check(t, dir, "1000"); code != 0 {
		t.Fatalf("exit %d for files at most the limit:\n%s", code, out)
	}
}

func TestLargeFileCheckFailsOnATrackedBigFile(t *testing.T) {
	dir := repo(t, map[string]int{"a.go": 10, "sub dir/big\tone.bin": 1001, "bin2": 3000})
	code, out := check(t, dir, "1000")
	if code != 1 {
		t.Fatalf("exit %d, want 1:\n%s", code, out)
	}
	for _, want := range []string{"sub dir/big\tone.bin (1001 bytes)", "bin2 (3000 bytes)"} {
		if !strings.Contains(out, want) {
			t.Errorf("output does not name %q:\n%s", want, out)
		}
	}
	if strings.Contains(out, "a.go") {
		t.Errorf("output names a small file:\n%s", out)
	}
	// Committed, then removed from the index: the check passes again.
	git(t, dir, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "big")
	git(t, dir, "rm", "-q", "--cached", "--", "sub dir/big\tone.bin", "bin2")
	if code, out := check(t, dir, "1000"); code != 0 {
		t.Fatalf("exit %d after git rm --cached:\n%s", code, out)
	}
}

// The default limit is 1 MiB: the size of the binary that was committed
// fails, a file of exactly 1 MiB does not.
func TestLargeFileCheckDefaultLimit(t *testing.T) {
	if code, out := check(t, repo(t, map[string]int{"exact": 1 << 20})); code != 0 {
		t.Fatalf("exit %d for a 1 MiB file:\n%s", code, out)
	}
	if code, out := check(t, repo(t, map[string]int{"cowork-agent": 1<<20 + 1})); code != 1 {
		t.Fatalf("exit %d for a file of 1 MiB + 1 byte, want 1:\n%s", code, out)
	}
}
