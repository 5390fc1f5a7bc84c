package agentclient_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/coworkhq/cowork/hostd/agentclient"
	"github.com/coworkhq/cowork/hostd/agentclient/agenttest"
	"github.com/coworkhq/cowork/internal/execwire"
)

// When the client goes away the agent ends the process's whole session,
// not only the group it started: a shell with job control puts each job
// in a process group of its own, out of reach of a signal to the first
// group. Here the job also ignores SIGHUP, so only the SIGKILL that
// follows the grace period, sent to every member of the session, ends it.
func TestClientGoneKillsJobsInTheirOwnProcessGroups(t *testing.T) {
	a := agenttest.Start(t, "--kill-grace", "300ms")
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	out := &lineWatcher{}
	seen := out.expect("\n")
	c := a.Client(t)
	done, pids := make(chan error, 1), make(chan int, 1)
	go func() {
		_, err := c.Exec(ctx, agentclient.ExecOptions{
			Argv:    []string{"bash", "-c", `set -m; trap "" HUP; sleep 1000 & echo $!; wait`},
			Stdout:  out,
			Started: func(pid int) { pids <- pid },
		})
		done <- err
	}()
	select {
	case <-seen:
	case <-time.After(20 * time.Second):
		t.Fatalf("no pid printed; output %q", out.String())
	}
	job, err := strconv.Atoi(strings.TrimSpace(out.String()))
	if err != nil {
		t.Fatal(err)
	}
	defer syscall.Kill(job, syscall.SIGKILL)
	// The job runs in a process group of its own, in the exec's session.
	shell := <-pids
	pgid, _ := syscall.Getpgid(job)
	sid, _ := unix.Getsid(job)
	if pgid != job || sid != shell {
		t.Fatalf("the job is in group %d and session %d, want its own group (%d) in the exec's session (%d)", pgid, sid, job, shell)
	}
	cancel()
	select {
	case <-done:
	case <-time.After(20 * time.Second):
		t.Fatal("Exec did not return after its context ended")
	}
	if !gone(job, 10*time.Second) {
		t.Fatalf("the job in its own process group (pid %d) outlived its client", job)
	}
}

// A client going away is a hung-up terminal: the session gets SIGHUP
// first, so that a process can save its work, and SIGKILL only after the
// grace period (long here: the hang-up must come well before it).
func TestClientGoneHangsUpFirst(t *testing.T) {
	a := agenttest.Start(t, "--kill-grace", "60s")
	mark := filepath.Join(t.TempDir(), "hup")
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	out := &lineWatcher{}
	ready := out.expect("ready")
	c := a.Client(t)
	pids := make(chan int, 1)
	go c.Exec(ctx, agentclient.ExecOptions{
		Argv:    []string{"sh", "-c", `trap 'echo hup > "$1"; exit 0' HUP; echo ready; while :; do sleep 0.1; done`, "sh", mark},
		Stdout:  out,
		Started: func(pid int) { pids <- pid },
	})
	select {
	case <-ready:
	case <-time.After(20 * time.Second):
		t.Fatalf("never ready; output %q", out.String())
	}
	pid := <-pids
	defer syscall.Kill(-pid, syscall.SIGKILL)
	cancel()
	if !gone(pid, 20*time.Second) {
		t.Fatal("the process did not end within 20 s of its client leaving")
	}
	if b, err := os.ReadFile(mark); err != nil || strings.TrimSpace(string(b)) != "hup" {
		t.Fatalf("the process ended without its SIGHUP trap running: %q %v", b, err)
	}
}

// An agent told to stop ends every exec's session before it exits,
// including what survived the hang-up after the process itself died of it:
// once the agent is gone, nothing would ever kill it. (This also found the
// session waiting forever on a kill it looked for before hangUp had made
// it, which kept the agent from ever stopping.)
func TestAgentStopWaitsUntilTheSessionIsKilled(t *testing.T) {
	a := agenttest.Start(t, "--kill-grace", "500ms")
	out := &lineWatcher{}
	seen := out.expect("\n")
	c := a.Client(t)
	// sh dies of the SIGHUP; its child, which ignores it (from before it
	// prints its pid), needs the SIGKILL.
	go c.Exec(context.Background(), agentclient.ExecOptions{
		Argv:   []string{"sh", "-c", `sh -c 'trap "" HUP; echo $$; exec sleep 1000' & wait`},
		Stdout: out,
	})
	select {
	case <-seen:
	case <-time.After(20 * time.Second):
		t.Fatalf("no pid printed; output %q", out.String())
	}
	child, err := strconv.Atoi(strings.TrimSpace(out.String()))
	if err != nil {
		t.Fatal(err)
	}
	defer syscall.Kill(child, syscall.SIGKILL)
	a.Cmd.Process.Signal(syscall.SIGTERM)
	exited := make(chan error, 1)
	go func() { exited <- a.Cmd.Wait() }()
	select {
	case <-exited:
	case <-time.After(30 * time.Second):
		t.Fatalf("the agent did not stop on SIGTERM; log:\n%s", a.Log())
	}
	if !gone(child, 5*time.Second) {
		t.Fatalf("the HUP-ignoring child (pid %d) outlived the agent", child)
	}
}

// Stdin sent to a process started without stdin is dropped, and the
// connection goes on: the agent still hears the client leave, and kills the
// process then.
func TestStdinForAProcessWithoutStdinKeepsTheStreamWatched(t *testing.T) {
	a := agenttest.Start(t, "--kill-grace", "300ms")
	r := dialRaw(t, a)
	r.send(startFrame(execwire.StartMsg{Argv: []string{"sleep", "1000"}, Cwd: "/", NoStdin: true}))
	typ, p, err := r.recv()
	if err != nil || typ != execwire.Started {
		t.Fatalf("start: %v %v", typ, err)
	}
	v, _ := execwire.Uint32s(p, 1)
	pid := int(v[0])
	defer syscall.Kill(pid, syscall.SIGKILL)
	for range 3 {
		if err := r.send(execwire.AppendFrame(nil, execwire.Stdin, []byte("ignored\n"))); err != nil {
			t.Fatal(err)
		}
	}
	r.c.Close()
	if !gone(pid, 10*time.Second) {
		t.Fatalf("sleep (pid %d) outlived its client after stdin it had no use for", pid)
	}
}

// Closing the client ends its running execs with an error, and the agent
// kills their processes, as when the client goes away.
func TestCloseEndsRunningExecs(t *testing.T) {
	a := agenttest.Start(t, "--kill-grace", "300ms")
	c, _ := agentclient.New(agentclient.UnixDialer(a.Socket))
	pids, done := make(chan int, 1), make(chan error, 1)
	go func() {
		_, err := c.Exec(context.Background(), agentclient.ExecOptions{Argv: []string{"sleep", "1000"}, Started: func(pid int) { pids <- pid }})
		done <- err
	}()
	pid := <-pids
	defer syscall.Kill(pid, syscall.SIGKILL)
	c.Close()
	select {
	case err := <-done:
		if err == nil || !strings.Contains(err.Error(), "closed") {
			t.Fatalf("Exec after Close: %v; want an error that says the client closed", err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("Exec still running 20 s after Close")
	}
	if !gone(pid, 10*time.Second) {
		t.Fatalf("sleep (pid %d) outlived the closed client", pid)
	}
	if _, err := c.Exec(context.Background(), agentclient.ExecOptions{Argv: []string{"true"}}); err == nil {
		t.Fatal("a closed client ran another exec")
	}
}

// startDetached runs sh printing the pid of a sleep it detached into a
// session of its own, and returns that pid; the exec's outcome comes on
// the channel.
func startDetached(t *testing.T, ctx context.Context, c *agentclient.Client, script string, end bool) (int, <-chan error) {
	t.Helper()
	out := &lineWatcher{}
	seen := out.expect("\n")
	done := make(chan error, 1)
	go func() {
		_, err := c.Exec(ctx, agentclient.ExecOptions{Argv: []string{"sh", "-c", script}, Stdout: out, EndSession: end})
		done <- err
	}()
	select {
	case <-seen:
	case <-time.After(20 * time.Second):
		t.Fatalf("no pid printed; output %q", out.String())
	}
	pid, err := strconv.Atoi(strings.TrimSpace(out.String()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { syscall.Kill(pid, syscall.SIGKILL) })
	return pid, done
}

// A descendant in a session of its own goes too when the client goes
// away: it carries the exec's marker.
func TestClientGoneKillsADetachedDescendant(t *testing.T) {
	a := agenttest.Start(t, "--kill-grace", "300ms")
	ctx, cancel := context.WithCancel(context.Background())
	pid, done := startDetached(t, ctx, a.Client(t), `setsid sleep 1000 </dev/null >/dev/null 2>&1 & sleep 0.2; pgrep -n -x sleep -s 0 >/dev/null; pgrep -n -f "^sleep 1000$"; wait`, false)
	if sid, _ := unix.Getsid(pid); sid != pid {
		t.Fatalf("the sleep (%d) is in session %d, not one of its own", pid, sid)
	}
	cancel()
	<-done
	if !gone(pid, 10*time.Second) {
		t.Fatalf("the detached descendant (pid %d) outlived its client", pid)
	}
}

// A process that exits by itself leaves its detached children running,
// unless its exec asked for its session to end with it (ask's tools).
func TestEndSessionEndsWhatTheProcessLeft(t *testing.T) {
	a := agenttest.Start(t, "--kill-grace", "300ms")
	c := a.Client(t)
	script := `setsid sleep 1000 </dev/null >/dev/null 2>&1 & sleep 0.2; pgrep -n -f "^sleep 1000$"`
	kept, done := startDetached(t, context.Background(), c, script, false)
	<-done
	if gone(kept, time.Second) {
		t.Fatal("a background child of a process that exited by itself was ended")
	}
	syscall.Kill(kept, syscall.SIGKILL)
	gone(kept, 5*time.Second)
	ended, done := startDetached(t, context.Background(), c, script, true)
	<-done
	if !gone(ended, 10*time.Second) {
		env, _ := os.ReadFile(fmt.Sprintf("/proc/%d/environ", ended))
		t.Fatalf("with EndSession, the detached child (pid %d) outlived the process; its env %q; agent log %s", ended, env, a.Log())
	}
}
