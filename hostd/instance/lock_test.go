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
	if _, err := CleanStale(p); !errors.Is(err, ErrRunning) {
		t.Fatalf("cleaning a live instance: %v", err)
	}
	WritePid(p)
	os.WriteFile(p.HostdSock(), nil, 0o600)
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
