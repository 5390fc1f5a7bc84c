//go:build e2e

package e2e

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// countingWriter counts what a streaming command printed.
type countingWriter struct{ n atomic.Int64 }

func (w *countingWriter) Write(p []byte) (int, error) { w.n.Add(int64(len(p))); return len(p), nil }

// TestFaults breaks things under a running instance and checks that cowork
// says what happened and recovers.
func TestFaults(t *testing.T) {
	e := newEnv(t)
	e.must(e.initArgs()...)

	t.Run("agent killed during a streaming exec", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		c := e.cmd(ctx, "exec", "yes")
		out := &countingWriter{}
		var errOut strings.Builder
		c.Stdout, c.Stderr = out, &errOut
		if err := c.Start(); err != nil {
			t.Fatal(err)
		}
		done := make(chan error, 1)
		go func() { done <- c.Wait() }()
		for out.n.Load() < 1<<20 {
			select {
			case err := <-done:
				t.Fatalf("yes ended early: %v %s", err, errOut.String())
			case <-time.After(50 * time.Millisecond):
			}
		}
		e.run("exec", "-u", "root", "pkill -9 -x cowork-agent") // dies with its agent too
		killed := time.Now()
		select {
		case err := <-done:
			if err == nil {
				t.Errorf("exec exited 0 after its agent died")
			}
			if took := time.Since(killed); took > 2*time.Second {
				t.Errorf("exec took %v to notice its agent died", took)
			}
			if !strings.Contains(errOut.String(), "lost the connection to the guest agent") {
				t.Errorf("the message does not name the cause: %q", errOut.String())
			}
		case <-time.After(20 * time.Second):
			t.Fatalf("exec still runs 20 s after its agent died")
		}
		// The guest's init restarts the agent; the next exec works.
		var r result
		for range 30 {
			if r = e.run("exec", "echo back"); r.code == 0 && r.out == "back\n" {
				break
			}
			time.Sleep(time.Second)
		}
		if r.out != "back\n" {
			t.Fatalf("no exec after the agent restarted: %s", r)
		}
	})

	t.Run("full guest disk", func(t *testing.T) {
		e.must("exec", "-u", "root", "fallocate -l $(df --output=avail -B1 / | tail -1) /fill; sync")
		// root may use the blocks ext4 reserves; the user may not.
		r := e.run("exec", "head -c 8M /dev/zero > ~/more && sync")
		if r.code == 0 || !strings.Contains(r.errOut, "No space left on device") {
			t.Errorf("a write to a full disk: %s", r)
		}
		if r := e.must("exec", "echo still serving"); r.out != "still serving\n" {
			t.Errorf("the agent on a full disk: %s", r)
		}
		e.must("exec", "-u", "root", "rm -f /fill /home/cowork/more")
	})

	t.Run("host workspace removed", func(t *testing.T) {
		if err := os.RemoveAll(e.workspace); err != nil {
			t.Fatal(err)
		}
		r := e.run("exec", "ls /workspace")
		if !strings.Contains(r.errOut, "warning: the workspace "+e.workspace+" was removed from this machine") {
			t.Errorf("exec does not warn about the removed workspace: %s", r)
		}
		if s := e.status(); s.State != "running" || !strings.Contains(s.Note, "was removed") {
			t.Fatalf("status with the workspace gone: %+v", s)
		}
		e.must("stop")
		r = e.run("start")
		if r.code == 0 || !strings.Contains(r.errOut, "workspace "+e.workspace) || !strings.Contains(r.errOut, "create it") {
			t.Errorf("start without its workspace: %s", r)
		}
		os.MkdirAll(e.workspace, 0o777)
		e.must("start")
	})

	t.Run("guest kernel panic", func(t *testing.T) {
		e.run("exec", "-u", "root", "echo c > /proc/sysrq-trigger")
		var s status
		for range 60 {
			if s = e.status(); s.State == "stopped" {
				break
			}
			time.Sleep(time.Second)
		}
		if s.State != "stopped" {
			t.Fatalf("the VM still runs after a panic: %+v", s)
		}
		r := e.must("status")
		if !strings.Contains(r.out, "the guest kernel panicked (Kernel panic - not syncing") {
			t.Errorf("status does not say the kernel panicked: %s", r)
		}
		serial, _ := os.ReadFile(filepath.Join(e.instanceDir("sandbox"), "serial.log"))
		if !strings.Contains(string(serial), "Kernel panic - not syncing") {
			t.Errorf("serial.log lacks the panic")
		}
		e.must("start")
		if r := e.must("status"); strings.Contains(r.out, "panicked") {
			t.Errorf("the panic is still reported after a start: %s", r)
		}
	})
}
