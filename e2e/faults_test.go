//go:build e2e

package e2e

import (
	"context"
	"crypto/rand"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
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
		// Made again as a user makes a folder (root's, 0755 here): the
		// guest's user writes to it through the share all the same.
		if err := os.Mkdir(e.workspace, 0o755); err != nil {
			t.Fatal(err)
		}
		e.must("start")
		e.must("exec", "echo back > /workspace/after.txt")
		if b, err := os.ReadFile(filepath.Join(e.workspace, "after.txt")); err != nil || string(b) != "back\n" {
			t.Errorf("the guest user's write to the new workspace: %q %v", b, err)
		}
	})

	t.Run("guest clock set wrong is corrected", func(t *testing.T) {
		// The same correction follows a host clock jump (noticed as the
		// wall clock moving unlike the monotonic one); setting the host's
		// clock here would disturb the machine running the tests.
		e.must("exec", "-u", "root", "date -s @978307200 >/dev/null") // 2001-01-01
		deadline := time.Now().Add(15 * time.Second)
		for {
			r := e.must("exec", "date +%s")
			guest, _ := strconv.ParseInt(strings.TrimSpace(r.out), 10, 64)
			if d := time.Now().Unix() - guest; d < 3 && d > -3 {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("the guest clock is still %s, 15 s after it was set wrong", time.Unix(guest, 0).UTC())
			}
			time.Sleep(time.Second)
		}
	})

	t.Run("garbage into hostd.sock and agent.sock", func(t *testing.T) {
		junk := make([]byte, 64<<10)
		for _, sock := range []string{"hostd.sock", "agent.sock"} {
			for range 20 {
				c, err := net.Dial("unix", filepath.Join(e.instanceDir("sandbox"), sock))
				if err != nil {
					t.Fatalf("%s: %v", sock, err)
				}
				rand.Read(junk)
				c.SetDeadline(time.Now().Add(5 * time.Second))
				c.Write(junk)
				c.Close()
			}
		}
		if s := e.status(); s.State != "running" || !s.Ready {
			t.Fatalf("hostd after garbage: %+v", s)
		}
		if r := e.must("exec", "echo still here"); r.out != "still here\n" {
			t.Fatalf("the agent after garbage: %s", r)
		}
	})

	t.Run("a guest process cannot reach the agent", func(t *testing.T) {
		// The agent holds its virtio-serial port; the kernel lets one opener
		// have it, so not even root in the guest can talk to the agent.
		r := e.run("exec", "-u", "root", `for p in /sys/class/virtio-ports/*; do
  [ "$(cat $p/name)" = org.cowork.agent ] && exec 3<>/dev/$(basename $p) && echo opened
done`)
		if r.code == 0 || strings.Contains(r.out, "opened") || !strings.Contains(r.errOut, "busy") {
			t.Errorf("opening the agent's port from the guest: %s", r)
		}
	})

	t.Run("hard stop during heavy writes, then fsck is clean", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		writer := e.cmd(ctx, "exec", "-u", "root", "while :; do head -c 4M /dev/urandom > /var/tmp/w.$RANDOM; sync; rm -f /var/tmp/w.*; done")
		if err := writer.Start(); err != nil {
			t.Fatal(err)
		}
		time.Sleep(3 * time.Second)
		e.must("stop", "--force") // the power cut, mid-write
		writer.Wait()
		e.must("start") // the kernel replays the journal
		e.must("stop")
		disk := filepath.Join(e.instanceDir("sandbox"), "disk.raw")
		if out, err := exec.Command("e2fsck", "-fn", disk).CombinedOutput(); err != nil {
			t.Fatalf("e2fsck after the recovery boot: %v\n%s", err, out)
		}
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
