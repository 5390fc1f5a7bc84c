package hostd

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/coworkhq/cowork/hostd/controlwire"
	"github.com/coworkhq/cowork/hostd/instance"
	"github.com/coworkhq/cowork/hostd/machine/machinetest"
)

// fakeSystemctl is a systemctl for the test guest's agent: it logs its
// arguments and runs script.
func fakeSystemctl(t *testing.T, script string) (prog, log string) {
	dir := t.TempDir()
	prog, log = filepath.Join(dir, "systemctl"), filepath.Join(dir, "log")
	if err := os.WriteFile(prog, []byte("#!/bin/sh\necho \"$*\" >>"+log+"\n"+script+"\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	return prog, log
}

func withDocker(t *testing.T, systemctl string) *hostdTest {
	h := newHostdTest(t, machinetest.Guest{Systemctl: systemctl})
	h.cfg.With = []string{instance.WithDocker}
	if err := h.cfg.Save(h.paths.Dir()); err != nil {
		t.Fatal(err)
	}
	return h
}

// An instance made --with docker is ready only once docker runs in the
// guest (a docker command right after start finds it), and says it
// waits when that takes a while.
func TestReadyWaitsForDocker(t *testing.T) {
	prog, log := fakeSystemctl(t, "sleep 1.5")
	r, _ := withDocker(t, prog).ready(t)
	b, _ := os.ReadFile(log)
	if string(b) != "start --no-ask-password -- docker.service\n" {
		t.Fatalf("the guest ran systemctl %q", b)
	}
	var waited bool
	for _, ev := range r.seen {
		if ev.Phase == controlwire.PhaseNote && ev.Message == "waiting for docker to start" {
			waited = true
		}
		if ev.Phase == controlwire.PhaseReady && !waited {
			t.Fatalf("ready before docker started: %v", phases(r.seen))
		}
	}
}

// Docker that fails to start is a note naming where to look, and the
// guest is still ready: it is there to look inside.
func TestDockerThatFailsIsANote(t *testing.T) {
	prog, _ := fakeSystemctl(t, "echo 'Job for docker.service failed because the control process exited with error code.' >&2; exit 1")
	r, _ := withDocker(t, prog).ready(t)
	for _, ev := range r.seen {
		if ev.Phase == controlwire.PhaseNote && strings.HasPrefix(ev.Message, "docker did not start") {
			if !strings.Contains(ev.Message, "journalctl -u docker") || !strings.Contains(ev.Error, "Job for docker.service failed") {
				t.Errorf("the note: %s: %s", ev.Message, ev.Error)
			}
			return
		}
	}
	t.Errorf("no note of docker's failure in %v", phases(r.seen))
}

// Without --with docker nothing is started.
func TestNoWithStartsNothing(t *testing.T) {
	prog, log := fakeSystemctl(t, "")
	h := newHostdTest(t, machinetest.Guest{Systemctl: prog})
	h.ready(t)
	if b, err := os.ReadFile(log); err == nil {
		t.Errorf("the guest ran systemctl %q", b)
	}
}

// `cowork stop` while hostd waits for docker stops the wait: no note
// blames docker, and the instance is never called ready.
func TestStopWhileWaitingForDocker(t *testing.T) {
	prog, _ := fakeSystemctl(t, "exec sleep 60")
	h := withDocker(t, prog)
	r := h.start(t)
	h.host.Next(t)
	r.until(controlwire.PhaseNote) // waiting for docker to start
	r.stop(&controlwire.StopRequest{Force: true})
	for _, ev := range r.all() {
		if ev.Phase == controlwire.PhaseReady || strings.HasPrefix(ev.Message, "docker did not start") {
			t.Errorf("after a stop during the wait: %s %s: %s", ev.Phase, ev.Message, ev.Error)
		}
	}
}
