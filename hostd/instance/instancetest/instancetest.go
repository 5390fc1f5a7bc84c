// Package instancetest makes instances on disk for the tests of the
// commands, and of hostd, that act on them.
package instancetest

import (
	"os"
	"testing"

	"github.com/coworkhq/cowork/hostd/instance"
)

// New makes a stopped instance with cfg's settings in a fresh COWORK_HOME:
// its directory and its saved config, nothing else. An empty Name is the
// default instance; an empty Workspace is a fresh temporary directory.
func New(t testing.TB, cfg instance.Config) (instance.Paths, *instance.Config) {
	t.Helper()
	t.Setenv("COWORK_HOME", t.TempDir())
	return Add(t, cfg)
}

// Add is New in the COWORK_HOME the test has already: one more instance.
func Add(t testing.TB, cfg instance.Config) (instance.Paths, *instance.Config) {
	t.Helper()
	if cfg.Name == "" {
		cfg.Name = instance.DefaultName
	}
	if cfg.Workspace == "" {
		cfg.Workspace = t.TempDir()
	}
	p, err := instance.PathsFor(cfg.Name)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(p.Dir(), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := cfg.Save(p.Dir()); err != nil {
		t.Fatal(err)
	}
	return p, &cfg
}
