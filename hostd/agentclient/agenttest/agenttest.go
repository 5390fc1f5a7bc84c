// Package agenttest runs the real guest agent as a process on a unix socket,
// for tests of everything that talks to it.
package agenttest

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/coworkhq/cowork/hostd/agentclient"
	"github.com/coworkhq/cowork/hostd/agentrpc"
	"github.com/coworkhq/cowork/internal/sysproc"
)

var (
	buildOnce sync.Once
	binPath   string
	buildErr  error
)

// Binary builds cmd/cowork-agent once per test process and returns its path.
func Binary(t testing.TB) string {
	t.Helper()
	buildOnce.Do(func() {
		dir, err := os.MkdirTemp("", "cowork-agent-bin")
		if err != nil {
			buildErr = err
			return
		}
		binPath = filepath.Join(dir, "cowork-agent")
		cmd := exec.Command("go", "build", "-o", binPath, "github.com/coworkhq/cowork/cmd/cowork-agent")
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
		if out, err := cmd.CombinedOutput(); err != nil {
			buildErr = fmt.Errorf("build agent: %v\n%s", err, out)
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return binPath
}

// Agent is a running agent process.
type Agent struct {
	Socket string // the unix socket it serves
	Addr   string // unix://Socket, as users write it
	Cmd    *exec.Cmd
	log    *syncBuffer
}

// Start runs the agent with extra flags on a fresh socket and waits until it
// answers. It is stopped when the test ends.
func Start(t testing.TB, flags ...string) *Agent {
	t.Helper()
	bin := Binary(t)
	dir, err := os.MkdirTemp("", "agt") // short: unix socket paths are limited
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	a := &Agent{Socket: filepath.Join(dir, "a.sock"), log: &syncBuffer{}}
	a.Addr = "unix://" + a.Socket
	a.Cmd = exec.Command(bin, append([]string{"--listen", a.Addr}, flags...)...)
	a.Cmd.Stderr = a.log
	a.Cmd.SysProcAttr = sysproc.Attr(false)
	if err := a.Cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		a.Cmd.Process.Signal(syscall.SIGTERM)
		done := make(chan struct{})
		go func() { a.Cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			a.Cmd.Process.Kill()
			<-done
			t.Errorf("agent did not stop on SIGTERM; log:\n%s", a.Log())
		}
	})
	// Wait for the socket first: until it exists, a call fails at once.
	deadline := time.Now().Add(10 * time.Second)
	for {
		c, err := net.Dial("unix", a.Socket)
		if err == nil {
			c.Close()
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("agent did not listen: %v; log:\n%s", err, a.Log())
		}
		time.Sleep(5 * time.Millisecond)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := a.RPC(t).Info(ctx); err != nil {
		t.Fatalf("agent did not answer: %v; log:\n%s", err, a.Log())
	}
	return a
}

// Client returns a new client of the agent, closed when the test ends.
func (a *Agent) Client(t testing.TB) *agentclient.Client {
	t.Helper()
	c, err := agentclient.New(agentclient.UnixDialer(a.Socket))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// RPC returns a new client of the agent's calls (Info, Provisioning...),
// closed when the test ends.
func (a *Agent) RPC(t testing.TB) *agentrpc.Client {
	t.Helper()
	c, err := agentrpc.New(agentclient.UnixDialer(a.Socket))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// Log is what the agent wrote to stderr so far.
func (a *Agent) Log() string { return a.log.String() }

// Alive reports whether the agent process is still running.
func (a *Agent) Alive() bool {
	return a.Cmd.ProcessState == nil && a.Cmd.Process.Signal(syscall.Signal(0)) == nil
}

// PeakRSS is the agent's high-water resident memory, from /proc.
func (a *Agent) PeakRSS(t testing.TB) int64 {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", a.Cmd.Process.Pid))
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "VmHWM:"); ok {
			var kb int64
			fmt.Sscanf(strings.TrimSpace(v), "%d kB", &kb)
			return kb << 10
		}
	}
	t.Fatal("no VmHWM in /proc/pid/status")
	return 0
}

type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}
