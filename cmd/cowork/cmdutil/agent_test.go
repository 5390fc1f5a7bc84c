package cmdutil

import (
	"errors"
	"os"
	"strings"
	"testing"

	"github.com/coworkhq/cowork/hostd/instance"
)

// newInstance makes an instance directory with a config in a fresh
// COWORK_HOME, as `cowork init` leaves it.
func newInstance(t *testing.T, name string) instance.Paths {
	t.Helper()
	t.Setenv("COWORK_HOME", t.TempDir())
	t.Setenv(AgentEnv, "")
	p, err := instance.PathsFor(name)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(p.Dir(), 0o700); err != nil {
		t.Fatal(err)
	}
	cfg := &instance.Config{Name: name, Workspace: t.TempDir()}
	if err := cfg.Save(p.Dir()); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestConnectCleansUpAfterADeadHostd(t *testing.T) {
	for _, name := range []string{instance.DefaultName, "dev"} {
		p := newInstance(t, name)
		// What a hostd killed with -9 leaves: its pid file, both sockets
		// and the run directory, with nobody holding the lock.
		os.MkdirAll(p.Run(), 0o700)
		os.WriteFile(p.PidFile(), []byte("4242\n"), 0o600)
		for _, f := range []string{p.HostdSock(), p.AgentSock()} {
			os.WriteFile(f, nil, 0o600)
		}

		_, err := (&AgentTarget{Instance: name}).Connect()
		want := "instance " + name + " is not running; start it with `cowork start`"
		if name != instance.DefaultName {
			want = "instance dev is not running; start it with `cowork start --name dev`"
		}
		if err == nil || err.Error() != want {
			t.Fatalf("%s: got %v, want %q", name, err, want)
		}
		for _, f := range []string{p.PidFile(), p.HostdSock(), p.AgentSock(), p.Run()} {
			if _, err := os.Stat(f); !errors.Is(err, os.ErrNotExist) {
				t.Errorf("%s survived: %v", f, err)
			}
		}
	}
}

func TestConnectToALiveInstance(t *testing.T) {
	p := newInstance(t, instance.DefaultName)
	l, err := instance.TryLock(p) // as the running hostd does
	if err != nil {
		t.Fatal(err)
	}
	defer l.Release()

	_, err = (&AgentTarget{Instance: instance.DefaultName}).Connect()
	if err == nil || !strings.Contains(err.Error(), "still starting") {
		t.Fatalf("before the relay listens: %v", err)
	}
	os.WriteFile(p.AgentSock(), nil, 0o600)
	c, err := (&AgentTarget{Instance: instance.DefaultName}).Connect()
	if err != nil {
		t.Fatalf("with the relay up: %v", err)
	}
	c.Close()
	if _, err := os.Stat(p.AgentSock()); err != nil {
		t.Errorf("a live instance's socket was touched: %v", err)
	}
}

func TestConnectToAMissingInstance(t *testing.T) {
	newInstance(t, instance.DefaultName)
	_, err := (&AgentTarget{Instance: "nope"}).Connect()
	if !errors.As(err, new(*instance.NotFoundError)) {
		t.Fatalf("got %v, want instance.NotFoundError", err)
	}
}
