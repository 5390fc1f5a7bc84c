package daemon

import (
	"bytes"
	"errors"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"syscall"
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

// setUmask clears the process's umask for the test, so that a mode that
// grants too much shows instead of being masked by the caller's umask.
func setUmask(t *testing.T, mask int) {
	old := syscall.Umask(mask)
	t.Cleanup(func() { syscall.Umask(old) })
}

// hostd.sock and agent.sock give whoever can connect the VM (agent.sock
// runs any command in the guest as any user): only their owner may.
func TestListenUnixSocketIsOwnerOnly(t *testing.T) {
	setUmask(t, 0)
	dir, err := os.MkdirTemp("", "lu") // short: socket paths are limited
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(dir)
	path := filepath.Join(dir, "hostd.sock")
	os.WriteFile(path, []byte("left by a crash"), 0o666)
	l, err := listenUnix(path)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	st, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if st.Mode()&os.ModeSocket == 0 || st.Mode().Perm() != 0o600 {
		t.Fatalf("socket mode %v, want a socket with 0600", st.Mode())
	}
	if got := syscall.Umask(0); got != 0 {
		t.Errorf("listenUnix left the umask at %#o", got)
	}
}
