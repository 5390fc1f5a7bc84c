package guestagent

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/coworkhq/cowork/internal/agentcall"
)

func startUnitsRequest(t *testing.T, units ...string) string {
	t.Helper()
	b, err := json.Marshal(agentcall.Request{Method: agentcall.MethodStartUnits, Units: units})
	if err != nil {
		t.Fatal(err)
	}
	return string(b) + "\n"
}

// start_units runs systemctl start with the names after "--", and
// answers once it returns; what it said on failure comes back, bounded.
func TestStartUnits(t *testing.T) {
	dir := t.TempDir()
	log := filepath.Join(dir, "log")
	prog := filepath.Join(dir, "systemctl")
	os.WriteFile(prog, []byte("#!/bin/sh\necho \"$*\" >>"+log+"\n[ \"$4\" = docker.service ] && exit 0\nhead -c 5000 /dev/zero | tr '\\0' x; exit 3\n"), 0o755)
	s := New(Options{Systemctl: prog})
	if rep := ask(t, s, startUnitsRequest(t, "docker.service")); len(rep) != 1 || rep[0].StartUnits == nil || rep[0].Error != "" {
		t.Fatalf("start docker.service: %+v", rep)
	}
	rep := ask(t, s, startUnitsRequest(t, "broken.service"))
	if len(rep) != 1 || rep[0].Kind != agentcall.KindFailed || !strings.Contains(rep[0].Error, "exit status 3: xxx") || len(rep[0].Error) > 400 {
		t.Errorf("a unit that fails: %+v", rep)
	}
	if b, _ := os.ReadFile(log); string(b) != "start --no-ask-password -- docker.service\nstart --no-ask-password -- broken.service\n" {
		t.Errorf("systemctl ran with %q", b)
	}
}

// Names that are no unit, or that systemctl would read as an option or
// a path, are refused before anything runs.
func TestStartUnitsRefusesWhatIsNoUnitName(t *testing.T) {
	dir := t.TempDir()
	log := filepath.Join(dir, "log")
	prog := filepath.Join(dir, "systemctl")
	os.WriteFile(prog, []byte("#!/bin/sh\necho \"$*\" >>"+log+"\n"), 0o755)
	s := New(Options{Systemctl: prog})
	many := make([]string, agentcall.MaxUnits+1)
	for i := range many {
		many[i] = "a.service"
	}
	for _, units := range [][]string{nil, many, {"--root=/tmp"}, {"-H.service"}, {"../etc/x.service"}, {"/lib/systemd/system/docker.service"}, {"a b.service"}, {"docker"}, {"docker.timer"}, {"a.service\n"}} {
		rep := ask(t, s, startUnitsRequest(t, units...))
		if len(rep) != 1 || rep[0].Kind != agentcall.KindInvalid {
			t.Errorf("%q: %+v, want refused as invalid", units, rep)
		}
	}
	if b, err := os.ReadFile(log); err == nil {
		t.Errorf("systemctl ran: %q", b)
	}
}
