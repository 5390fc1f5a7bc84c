package instance

import (
	"errors"
	"os"
	"testing"
)

func TestLockAndStaleCleanup(t *testing.T) {
	t.Setenv("COWORK_HOME", t.TempDir())
	p, _ := PathsFor("sandbox")
	os.MkdirAll(p.Run(), 0o700)

	l, err := TryLock(p)
	if err != nil {
		t.Fatal(err)
	}
	if !Held(p) {
		t.Fatal("Held is false while the lock is taken")
	}
	if _, err := TryLock(p); !errors.Is(err, ErrRunning) {
		t.Fatalf("a second lock: %v", err)
	}
	WritePid(p)
	os.WriteFile(p.HostdSock(), nil, 0o600)
	if _, err := CleanStale(p); !errors.Is(err, ErrRunning) {
		t.Fatalf("cleaning a live instance: %v", err)
	}
	l.Release() // as if hostd died

	if Held(p) {
		t.Fatal("Held after release")
	}
	stale, err := CleanStale(p)
	if err != nil || stale == nil || stale.Pid != os.Getpid() || len(stale.Files) != 2 {
		t.Fatalf("stale: %+v %v", stale, err)
	}
	for _, f := range []string{p.PidFile(), p.HostdSock(), p.Run()} {
		if _, err := os.Stat(f); !os.IsNotExist(err) {
			t.Errorf("%s survived the cleanup", f)
		}
	}
	if stale, _ := CleanStale(p); stale != nil {
		t.Errorf("a second cleanup found %+v", stale)
	}
}

// With nothing a hostd leaves behind, CleanStale takes no lock (nor makes
// the lock file): a lock held for nothing would turn away a hostd
// starting that moment. DeadPid names a dead hostd's pid and never a
// live one's, and changes nothing.
func TestCleanStaleOfNothingTakesNoLock(t *testing.T) {
	t.Setenv("COWORK_HOME", t.TempDir())
	p, _ := PathsFor("sandbox")
	os.MkdirAll(p.Dir(), 0o700)
	if stale, err := CleanStale(p); stale != nil || err != nil {
		t.Fatalf("CleanStale of nothing: %+v %v", stale, err)
	}
	if _, err := os.Stat(p.LockFile()); !os.IsNotExist(err) {
		t.Fatalf("CleanStale of nothing made the lock file: %v", err)
	}
	if pid := DeadPid(p); pid != 0 {
		t.Errorf("DeadPid with no pid file: %d", pid)
	}
	WritePid(p) // this process's: alive
	if pid := DeadPid(p); pid != 0 {
		t.Errorf("DeadPid named a live process: %d", pid)
	}
	if _, err := os.Stat(p.PidFile()); err != nil {
		t.Errorf("DeadPid removed the pid file: %v", err)
	}
}
