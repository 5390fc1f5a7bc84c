package daemon

import (
	"bytes"
	"errors"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/coworkhq/cowork/hostd/instance"
)

// A second hostd for an instance that already has one must leave at once
// and touch nothing: the pid file, the sockets and the run directory are
// the running hostd's, and a second one cleaning them up "as stale" would
// cut every client off the live VM.
func TestRunLeavesAnInstanceAnotherHostdHoldsAlone(t *testing.T) {
	t.Setenv("COWORK_HOME", t.TempDir())
	p, err := instance.PathsFor(instance.DefaultName)
	if err != nil {
		t.Fatal(err)
	}
	// No config.json: a Run that went past the lock fails soon after,
	// instead of booting a VM in a unit test.
	if err := os.MkdirAll(p.Run(), 0o700); err != nil {
		t.Fatal(err)
	}
	lock, err := instance.TryLock(p) // the running hostd
	if err != nil {
		t.Fatal(err)
	}
	defer lock.Release()
	live := map[string][]byte{
		p.PidFile():                        []byte("4242\n"),
		p.HostdSock():                      nil,
		p.AgentSock():                      nil,
		filepath.Join(p.Run(), "qmp.sock"): nil,
	}
	for f, b := range live {
		if err := os.WriteFile(f, b, 0o600); err != nil {
			t.Fatal(err)
		}
	}

	done := make(chan error, 1)
	go func() { done <- Run(instance.DefaultName, slog.New(slog.NewTextHandler(io.Discard, nil))) }()
	select {
	case err = <-done:
	case <-time.After(30 * time.Second):
		t.Fatal("Run did not return for an instance another hostd holds")
	}
	if !errors.Is(err, instance.ErrRunning) {
		t.Errorf("Run: %v, want instance.ErrRunning", err)
	}
	for f, want := range live {
		if got, err := os.ReadFile(f); err != nil || !bytes.Equal(got, want) {
			t.Errorf("%s: %q, %v; the second hostd touched the running one's file", filepath.Base(f), got, err)
		}
	}
	if !instance.Held(p) {
		t.Error("the lock is no longer held")
	}
}
