package guestagent

import (
	"os"
	"path/filepath"
	"slices"
	"testing"

	"github.com/coworkhq/cowork/internal/execwire"
)

// The program is found in the PATH the process will have, not the agent's.
func TestLookPathUsesTheChildsPath(t *testing.T) {
	dir := t.TempDir()
	prog := filepath.Join(dir, "only-here")
	os.WriteFile(prog, []byte("#!/bin/sh\n"), 0o755)
	spec, err := resolveSpec(&execwire.StartMsg{Argv: []string{"only-here"}, Env: []string{"PATH=" + dir}}, "", &accountCache{})
	if err != nil {
		t.Fatal(err)
	}
	if spec.path != prog {
		t.Fatalf("resolved %q, want %q", spec.path, prog)
	}
	// A relative path is relative to the working directory.
	spec, err = resolveSpec(&execwire.StartMsg{Argv: []string{"./only-here"}, Cwd: dir}, "", &accountCache{})
	if err != nil || spec.path != prog {
		t.Fatalf("relative: %v %v", spec, err)
	}
}

func TestEnvironmentLayers(t *testing.T) {
	spec, err := resolveSpec(&execwire.StartMsg{Argv: []string{"true"}, Env: []string{"PATH=/x:/usr/bin:/bin", "A=1=2", "A=3"}, TTY: &execwire.TerminalSize{}}, "", &accountCache{})
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"PATH=/x:/usr/bin:/bin", "A=3", "TERM=xterm-256color", "LANG=C.UTF-8"} {
		if !slices.Contains(spec.env, want) {
			t.Errorf("env %q lacks %q", spec.env, want)
		}
	}
	if spec.tty.Rows != 24 || spec.tty.Cols != 80 {
		t.Errorf("an unknown terminal size should default to 24x80, got %v", spec.tty)
	}
	for _, key := range []string{"HOME=", "USER=", "LOGNAME=", "SHELL="} {
		if !slices.ContainsFunc(spec.env, func(e string) bool { return len(e) > len(key) && e[:len(key)] == key }) {
			t.Errorf("env lacks %s", key)
		}
	}
}

// A user added while the agent runs is found: the cache follows /etc/passwd.
func TestAccountCacheFollowsPasswd(t *testing.T) {
	accounts := &accountCache{}
	if _, err := accounts.lookup(""); err != nil {
		t.Fatal(err)
	}
	first, _ := accounts.get("")
	again, _ := accounts.get("")
	if first != again {
		t.Fatal("a second lookup of an unchanged passwd was not cached")
	}
	accounts.mu.Lock()
	accounts.stamp = "stale"
	accounts.mu.Unlock()
	if fresh, _ := accounts.get(""); fresh == first {
		t.Fatal("a changed passwd did not invalidate the cache")
	}
}
