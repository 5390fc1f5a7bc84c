package agentclient_test

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"io"
	"net"
	"os"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/coworkhq/cowork/hostd/agentclient"
	"github.com/coworkhq/cowork/hostd/agentclient/agenttest"
	"github.com/coworkhq/cowork/internal/execwire"
)

// stillServes fails the test unless the agent runs a command correctly.
func stillServes(t *testing.T, a *agenttest.Agent) {
	t.Helper()
	st, out, _ := run(t, a.Client(t), agentclient.ExecOptions{Argv: []string{"echo", "ok"}})
	if st.Code != 0 || out != "ok\n" || !a.Alive() {
		t.Fatalf("agent no longer serves: %+v %q alive=%v\n%s", st, out, a.Alive(), a.Log())
	}
}

func TestBadStartsAreClearErrors(t *testing.T) {
	a := agenttest.Start(t)
	c := a.Client(t)
	file := t.TempDir() + "/plain"
	os.WriteFile(file, []byte("x"), 0o644)
	tests := []struct {
		name string
		o    agentclient.ExecOptions
		kind string
		msg  string
	}{
		{"unknown user", agentclient.ExecOptions{Argv: []string{"true"}, User: "no-such-user"}, execwire.KindInvalid, `unknown user "no-such-user"`},
		{"missing cwd", agentclient.ExecOptions{Argv: []string{"true"}, Dir: "/no/such/dir"}, execwire.KindInvalid, "working directory /no/such/dir does not exist"},
		{"cwd is a file", agentclient.ExecOptions{Argv: []string{"true"}, Dir: file}, execwire.KindInvalid, "is not a directory"},
		{"relative cwd", agentclient.ExecOptions{Argv: []string{"true"}, Dir: "tmp"}, execwire.KindInvalid, "not an absolute path"},
		{"missing binary", agentclient.ExecOptions{Argv: []string{"no-such-binary"}}, execwire.KindNotFound, `executable "no-such-binary" not found in PATH`},
		{"missing path", agentclient.ExecOptions{Argv: []string{"/no/such/binary"}}, execwire.KindNotFound, "/no/such/binary: no such file"},
		{"not executable", agentclient.ExecOptions{Argv: []string{file}}, execwire.KindNotFound, "not executable"},
		{"empty argv", agentclient.ExecOptions{}, execwire.KindInvalid, "empty argv"},
		{"bad env", agentclient.ExecOptions{Argv: []string{"true"}, Env: []string{"NOEQUALS"}}, execwire.KindInvalid, `"NOEQUALS" is not KEY=VALUE`},
		{"bad exec id", agentclient.ExecOptions{Argv: []string{"true"}, ExecID: "../../x"}, execwire.KindInvalid, "exec id"},
	}
	for _, tt := range tests {
		_, err := c.Exec(context.Background(), tt.o)
		var e *agentclient.ExecError
		if !errors.As(err, &e) || e.Kind != tt.kind || !strings.Contains(agentclient.Message(err), tt.msg) {
			t.Errorf("%s: got %v, want %v %q", tt.name, err, tt.kind, tt.msg)
		}
		if agentclient.IsNotFound(err) != (tt.kind == execwire.KindNotFound) {
			t.Errorf("%s: IsNotFound is %v", tt.name, agentclient.IsNotFound(err))
		}
	}
	stillServes(t, a)
}

// rawConn speaks the exec protocol by hand, to send what agentclient never
// would.
type rawConn struct {
	t *testing.T
	c net.Conn
	r *execwire.Reader
}

func dialRaw(t *testing.T, a *agenttest.Agent) *rawConn {
	t.Helper()
	c, err := net.Dial("unix", a.Socket)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	c.SetDeadline(time.Now().Add(30 * time.Second))
	lim := (&execwire.Limits{}).Allow(execwire.Started, 4).Allow(execwire.Stdout, execwire.MaxOutput).
		Allow(execwire.Stderr, execwire.MaxOutput).Allow(execwire.Exit, execwire.MaxExit)
	if _, err := io.WriteString(c, execwire.Preface); err != nil {
		t.Fatal(err)
	}
	return &rawConn{t: t, c: c, r: execwire.NewReader(bufio.NewReader(c), lim)}
}

func (r *rawConn) send(frames ...[]byte) error {
	_, err := r.c.Write(bytes.Join(frames, nil))
	return err
}

func startFrame(m execwire.StartMsg) []byte {
	b, _ := execwire.AppendJSON(nil, execwire.Start, m)
	return b
}

// recv reads the next frame; the error is the stream's end or refusal.
func (r *rawConn) recv() (execwire.Type, []byte, error) {
	t, n, err := r.r.Next()
	if err != nil {
		return 0, nil, err
	}
	p, err := r.r.ReadPayload(make([]byte, n), n)
	return t, p, err
}

// recvExit reads frames until an exit, and returns it and the stdout.
func (r *rawConn) recvExit() (*execwire.ExitMsg, string, error) {
	var out strings.Builder
	for {
		t, p, err := r.recv()
		if err != nil {
			return nil, out.String(), err
		}
		switch t {
		case execwire.Stdout:
			out.Write(p)
		case execwire.Exit:
			var m execwire.ExitMsg
			if err := json.Unmarshal(p, &m); err != nil {
				r.t.Fatal(err)
			}
			return &m, out.String(), nil
		}
	}
}

func TestOversizedFrameEndsOnlyThatConnection(t *testing.T) {
	a := agenttest.Start(t)
	// A start over the limit is refused before it is read.
	r := dialRaw(t, a)
	r.send(startFrame(execwire.StartMsg{Argv: []string{"echo", strings.Repeat("x", 2<<20)}}))
	m, _, err := r.recvExit()
	if err != nil || m.Kind != execwire.KindTooLarge || !strings.Contains(m.Error, "over the limit") {
		t.Errorf("oversized start: got %+v, %v; want a too_large refusal", m, err)
	}
	// Closed with the rest unread: a reset rather than an end, on a socket.
	if _, _, err := r.recv(); !errors.Is(err, io.EOF) && !errors.Is(err, syscall.ECONNRESET) {
		t.Errorf("the connection went on after an oversized start: %v", err)
	}
	// A stdin frame over the limit ends the connection, and the process.
	r = dialRaw(t, a)
	r.send(startFrame(execwire.StartMsg{Argv: []string{"cat"}}))
	typ, p, err := r.recv()
	if err != nil || typ != execwire.Started {
		t.Fatalf("start cat: %v %v", typ, err)
	}
	pid, _ := execwire.Uint32s(p, 1)
	r.send(execwire.AppendHeader(nil, execwire.Stdin, 2<<20), make([]byte, 64<<10))
	for err == nil {
		_, _, err = r.recv()
	}
	if !errors.Is(err, io.EOF) && !errors.Is(err, syscall.ECONNRESET) {
		t.Errorf("oversized stdin: the connection ended with %v", err)
	}
	if !gone(int(pid[0]), 10*time.Second) {
		t.Errorf("cat (pid %d) outlived the connection that broke the protocol", pid[0])
	}
	stillServes(t, a)
}

func TestFramesOutOfOrderAreRefused(t *testing.T) {
	a := agenttest.Start(t)
	for _, first := range [][]byte{
		execwire.AppendFrame(nil, execwire.Stdin, []byte("hi")),
		execwire.AppendUint32s(nil, execwire.Signal, 9),
		execwire.AppendFrame(nil, execwire.Stdout, []byte("hi")), // the agent's own type
		{0xee, 0, 0, 0, 0},
	} {
		r := dialRaw(t, a)
		r.send(first)
		m, _, err := r.recvExit()
		if err != nil || m.Kind != execwire.KindProtocol {
			t.Errorf("first frame %x: got %+v, %v; want a protocol refusal", first[:1], m, err)
		}
	}
	// A start that is no JSON, or a second start while a process runs.
	r := dialRaw(t, a)
	r.send(execwire.AppendFrame(nil, execwire.Start, []byte("{not json")))
	if m, _, err := r.recvExit(); err != nil || m.Kind != execwire.KindInvalid {
		t.Errorf("start without JSON: %+v, %v", m, err)
	}
	r = dialRaw(t, a)
	r.send(startFrame(execwire.StartMsg{Argv: []string{"sleep", "1000"}, Cwd: "/"}))
	typ, p, err := r.recv()
	if err != nil || typ != execwire.Started {
		t.Fatalf("start sleep: %v %v", typ, err)
	}
	pid, _ := execwire.Uint32s(p, 1)
	r.send(startFrame(execwire.StartMsg{Argv: []string{"true"}}))
	if !gone(int(pid[0]), 10*time.Second) {
		t.Errorf("a second start did not end the first exec's process")
	}
	stillServes(t, a)
}

// One connection runs one exec after another, and what the host sent for
// a finished exec (stdin it had no time to take) does not reach the next.
func TestAConnectionRunsExecsInTurn(t *testing.T) {
	a := agenttest.Start(t)
	r := dialRaw(t, a)
	for i := range 3 {
		r.send(startFrame(execwire.StartMsg{Argv: []string{"sh", "-c", "echo " + strconv.Itoa(i) + "; exit " + strconv.Itoa(i)}, Cwd: "/"}))
		m, out, err := r.recvExit()
		if err != nil || m.Code != i || out != strconv.Itoa(i)+"\n" {
			t.Fatalf("exec %d: %+v %q %v", i, m, out, err)
		}
		// Leftovers of the exec that ended: dropped.
		r.send(execwire.AppendFrame(nil, execwire.Stdin, []byte("stale")), execwire.AppendHeader(nil, execwire.CloseStdin, 0))
	}
	r.send(startFrame(execwire.StartMsg{Argv: []string{"cat"}, Cwd: "/"}), execwire.AppendFrame(nil, execwire.Stdin, []byte("fresh")),
		execwire.AppendHeader(nil, execwire.CloseStdin, 0))
	if m, out, err := r.recvExit(); err != nil || m.Code != 0 || out != "fresh" {
		t.Fatalf("cat after stale stdin: %+v %q %v", m, out, err)
	}
}

func TestGarbageConnectionIsClosed(t *testing.T) {
	a := agenttest.Start(t)
	for _, garbage := range [][]byte{
		randomBytes(64 << 10),
		[]byte("GET / HTTP/1.1\r\nHost: x\r\n\r\n"),
		append([]byte("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"), randomBytes(4096)...), // a valid preface, then noise
		append([]byte(execwire.Preface), randomBytes(4096)...),
	} {
		c, err := net.Dial("unix", a.Socket)
		if err != nil {
			t.Fatal(err)
		}
		go c.Write(garbage)
		c.SetReadDeadline(time.Now().Add(10 * time.Second))
		_, err = io.ReadAll(c)
		if ne, ok := err.(net.Error); ok && ne.Timeout() {
			t.Errorf("the agent kept a connection that sent garbage (%q...) open", garbage[:8])
		}
		c.Close()
	}
	stillServes(t, a)
}

func randomBytes(n int) []byte {
	b := make([]byte, n)
	rand.Read(b)
	return b
}

// An agent that dies mid-command ends the command at once, with a cause.
func TestAgentDyingMidCommand(t *testing.T) {
	a := agenttest.Start(t)
	started := make(chan int, 1)
	done := make(chan error, 1)
	began := time.Now()
	go func() {
		_, err := a.Client(t).Exec(context.Background(), agentclient.ExecOptions{Argv: []string{"sleep", "20"}, Started: func(pid int) { started <- pid }})
		done <- err
	}()
	<-started
	a.Cmd.Process.Kill()
	select {
	case err := <-done:
		var lost *agentclient.LostError
		if !errors.As(err, &lost) || !strings.Contains(err.Error(), "lost the connection to the guest agent") {
			t.Fatalf("got %v", err)
		}
		if d := time.Since(began); d > 5*time.Second {
			t.Fatalf("noticed after %v", d)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("the exec outlived its agent")
	}
}
