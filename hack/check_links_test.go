package hack

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// docs makes a repository with the given files (name -> content) in its
// index.
func docs(t *testing.T, files map[string]string) string {
	t.Helper()
	sizes := map[string]int{}
	for name := range files {
		sizes[name] = 0
	}
	dir := repo(t, sizes)
	for name, content := range files {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
		git(t, dir, "add", "--", name)
	}
	return dir
}

func runLinks(t *testing.T, dir string) (int, string) {
	t.Helper()
	return run(t, "check-links.sh", dir)
}

func TestLinkCheckPassesLiveLinks(t *testing.T) {
	dir := docs(t, map[string]string{
		"README.md": "See [the API](docs/api.md#exec), [a title](docs/api.md \"t\"),\n" +
			"[root](/SECURITY.md), [web](https://example.com/x), [mail](mailto:a@b), [here](#top).\n",
		"docs/api.md": "Back to [the README](../README.md).\n",
		"SECURITY.md": "",
	})
	if code, out := runLinks(t, dir); code != 0 {
		t.Fatalf("exit %d:\n%s", code, out)
	}
}

func TestLinkCheckFailsOnADeadLink(t *testing.T) {
	dir := docs(t, map[string]string{
		"README.md":   "The model: [architecture](../shared/ARCHITECTURE.md), [ok](docs/api.md).\n",
		"docs/api.md": "See [gone](missing.md#x).\n",
	})
	code, out := runLinks(t, dir)
	if code != 1 {
		t.Fatalf("exit %d, want 1:\n%s", code, out)
	}
	for _, want := range []string{"README.md: dead link to ../shared/ARCHITECTURE.md", "docs/api.md: dead link to missing.md"} {
		if !strings.Contains(out, want) {
			t.Errorf("output does not say %q:\n%s", want, out)
		}
	}
	if strings.Contains(out, "to docs/api.md") {
		t.Errorf("a live link reported:\n%s", out)
	}
}
