package cmdutil

import (
	"errors"
	"os"
	"strings"
	"testing"

	"github.com/coworkhq/cowork/hostd/instance"
	"github.com/coworkhq/cowork/hostd/instance/instancetest"
)

// newInstance makes an instance directory with a config in a fresh
// COWORK_HOME, as `cowork init` leaves it.
func newInstance(t *testing.T, name string) instance.Paths {
	t.Helper()
	t.Setenv(AgentEnv, "")
	p, _ := instancetest.New(t, instance.Config{Name: name})
	return p
}

func TestConnectCleansUpAfterADeadHostd(t *testing.T) {
	for _, tc := range []struct {
		name string
		pid  bool // whether the dead hostd left its pid file
		want string
	}{
		{instance.DefaultName, true, "instance sandbox is not running: its hostd (pid 4242) died, and what it left behind was cleaned up; start it with `cowork start`"},
		{"dev", true, "instance dev is not running: its hostd (pid 4242) died, and what it left behind was cleaned up; start it with `cowork start --name dev`"},
		{instance.DefaultName, false, "instance sandbox is not running; start it with `cowork start`"},
	} {
		p := newInstance(t, tc.name)
		// What a hostd killed with -9 leaves: its pid file, both sockets
		// and the run directory, with nobody holding the lock.
		os.MkdirAll(p.Run(), 0o700)
		if tc.pid {
			os.WriteFile(p.PidFile(), []byte("4242\n"), 0o600)
		}
		for _, f := range []string{p.HostdSock(), p.AgentSock()} {
			os.WriteFile(f, nil, 0o600)
		}

		_, err := (&AgentTarget{Instance: tc.name}).Connect()
		if err == nil || err.Error() != tc.want {
			t.Fatalf("%s: got %v, want %q", tc.name, err, tc.want)
		}
		for _, f := range []string{p.PidFile(), p.HostdSock(), p.AgentSock(), p.Run()} {
			if _, err := os.Stat(f); !errors.Is(err, os.ErrNotExist) {
				t.Errorf("%s survived: %v", f, err)
			}
		}
	}
}

func TestConnectToAStoppedInstance(t *testing.T) {
	newInstance(t, instance.DefaultName)
	_, err := (&AgentTarget{Instance: instance.DefaultName}).Connect()
	if want := "instance sandbox is not running; start it with `cowork start`"; err == nil || err.Error() != want {
		t.Fatalf("got %v, want %q", err, want)
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
