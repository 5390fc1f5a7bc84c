package agentclient_test

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/coworkhq/cowork/hostd/agentclient"
	"github.com/coworkhq/cowork/internal/execwire"
)

// fakeAgent is a hostile agent on a unix socket: on each connection it
// reads the preface and each start, and answers a start with what script
// returns for it (the count of starts on all connections, from 1); a nil
// answer sends nothing and holds the connection open.
type fakeAgent struct {
	sock  string
	conns atomic.Int32 // connections accepted
}

func startFake(t *testing.T, script func(start int) []byte) *fakeAgent {
	t.Helper()
	dir, err := os.MkdirTemp("", "fake")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	f := &fakeAgent{sock: filepath.Join(dir, "a.sock")}
	l, err := net.Listen("unix", f.sock)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	var starts atomic.Int32
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			f.conns.Add(1)
			go func() {
				defer c.Close()
				br := bufio.NewReader(c)
				if _, err := io.ReadFull(br, make([]byte, len(execwire.Preface))); err != nil {
					return
				}
				lim := (&execwire.Limits{}).Allow(execwire.Start, execwire.MaxStart).Allow(execwire.Stdin, execwire.MaxStdin).
					Allow(execwire.CloseStdin, 0).Allow(execwire.Signal, 4).Allow(execwire.Resize, 8)
				r := execwire.NewReader(br, lim)
				for {
					typ, n, err := r.Next()
					if err != nil {
						return
					}
					if _, err := r.ReadPayload(make([]byte, n), n); err != nil {
						return
					}
					if typ != execwire.Start {
						continue
					}
					answer := script(int(starts.Add(1)))
					if answer == nil {
						io.Copy(io.Discard, br) // hold it open, silent
						return
					}
					if _, err := c.Write(answer); err != nil {
						return
					}
				}
			}()
		}
	}()
	return f
}

func (f *fakeAgent) client(t *testing.T) *agentclient.Client {
	c, _ := agentclient.New(agentclient.UnixDialer(f.sock))
	t.Cleanup(func() { c.Close() })
	return c
}

func frames(fs ...[]byte) []byte { return bytes.Join(fs, nil) }

func started() []byte { return execwire.AppendUint32s(nil, execwire.Started, 42) }

func exitFrame(m execwire.ExitMsg) []byte {
	b, _ := execwire.AppendJSON(nil, execwire.Exit, m)
	return b
}

func out(s string) []byte { return execwire.AppendFrame(nil, execwire.Stdout, []byte(s)) }

// execOnce runs `x` against the fake with a deadline that only a hang reaches.
func execOnce(t *testing.T, c *agentclient.Client) (agentclient.ExitStatus, string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	var stdout bytes.Buffer
	st, err := c.Exec(ctx, agentclient.ExecOptions{Argv: []string{"x"}, Stdout: &stdout})
	if ctx.Err() != nil {
		t.Fatalf("Exec hung on a hostile agent until the test's deadline: %v", err)
	}
	return st, stdout.String(), err
}

func wantProtocolError(t *testing.T, what string, err error, says string) {
	t.Helper()
	var pe *agentclient.ProtocolError
	if !errors.As(err, &pe) || !strings.Contains(err.Error(), says) {
		t.Errorf("%s: got %v; want a protocol error saying %q", what, err, says)
	}
}

// Every frame the agent can get wrong is refused with a clear error, and
// the exec ends: nothing hangs, nothing reaches the caller's writers that
// the protocol does not allow.
func TestHostileAgentFramesAreRefused(t *testing.T) {
	header := func(typ execwire.Type, n int) []byte { return execwire.AppendHeader(nil, typ, n) }
	for _, tt := range []struct {
		name, says string
		answer     []byte
	}{
		{"oversized stdout", "stdout frame of 2147483648 bytes is over the limit of 262144", frames(started(), header(execwire.Stdout, 1<<31))},
		{"oversized exit", "exit frame of 16385 bytes is over the limit", frames(started(), header(execwire.Exit, execwire.MaxExit+1))},
		{"oversized started", "started frame of 5 bytes", header(execwire.Started, 5)},
		{"unknown type", "unexpected frame of type 127", frames(started(), header(127, 0))},
		{"a host's frame type", "unexpected frame of stdin", frames(started(), execwire.AppendFrame(nil, execwire.Stdin, []byte("x")))},
		{"a short started", "started: payload of 2 bytes", execwire.AppendFrame(nil, execwire.Started, []byte{0, 1})},
		{"output before started", "stdout before started", frames(out("early"), started())},
		{"a second started", "a second started", frames(started(), started())},
		{"exit without started or reason", "an exit before started that gives no reason", exitFrame(execwire.ExitMsg{Code: 0})},
		{"an error after started", "an exit with an error after started", frames(started(), exitFrame(execwire.ExitMsg{Error: "late", Kind: "x"}))},
		{"exit code out of range", "exit code 4096 is outside 0-255", frames(started(), exitFrame(execwire.ExitMsg{Code: 4096}))},
		{"negative exit code", "exit code -1 is outside 0-255", frames(started(), exitFrame(execwire.ExitMsg{Code: -1}))},
		{"signal that is no name", "is no signal name", frames(started(), exitFrame(execwire.ExitMsg{Code: 137, Signal: "SIG\x1b[2J"}))},
		{"exit that is no JSON", "exit: ", frames(started(), execwire.AppendFrame(nil, execwire.Exit, []byte("{")))},
	} {
		f := startFake(t, func(int) []byte { return tt.answer })
		_, stdout, err := execOnce(t, f.client(t))
		wantProtocolError(t, tt.name, err, tt.says)
		if stdout != "" {
			t.Errorf("%s: %q reached stdout", tt.name, stdout)
		}
	}
}

// A frame claiming gigabytes is refused on its header: the client does not
// allocate what the agent claims.
func TestHostileFrameLengthIsNotAllocated(t *testing.T) {
	f := startFake(t, func(int) []byte { return frames(started(), execwire.AppendHeader(nil, execwire.Stdout, 0xffffffff)) })
	c := f.client(t)
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	_, _, err := execOnce(t, c)
	runtime.ReadMemStats(&after)
	wantProtocolError(t, "4 GiB stdout frame", err, "over the limit")
	if grew := after.TotalAlloc - before.TotalAlloc; grew > 16<<20 {
		t.Errorf("refusing a 4 GiB frame allocated %d MiB", grew>>20)
	}
}

// A stream that ends inside a frame, or before the exit, is an error that
// says the connection was lost, at once.
func TestTruncatedStreamIsAnError(t *testing.T) {
	for _, tt := range []struct {
		name   string
		answer []byte
		want   error
	}{
		{"inside a payload", frames(started(), execwire.AppendHeader(nil, execwire.Stdout, 100), []byte("only ten b")), io.ErrUnexpectedEOF},
		{"before a payload", frames(started(), execwire.AppendHeader(nil, execwire.Stdout, 100)), io.ErrUnexpectedEOF},
		{"inside a header", frames(started(), []byte{byte(execwire.Stdout), 0, 0}), io.ErrUnexpectedEOF},
		{"before the exit", frames(started(), out("partial")), io.EOF},
	} {
		f := startFake(t, func(int) []byte { return tt.answer })
		dial := agentclient.UnixDialer(f.sock)
		// The fake closes right after its answer.
		c, _ := agentclient.New(func(ctx context.Context) (net.Conn, error) {
			nc, err := dial(ctx)
			if err != nil {
				return nil, err
			}
			return &closeAfterAnswer{Conn: nc}, nil
		})
		defer c.Close()
		_, _, err := execOnce(t, c)
		var lost *agentclient.LostError
		if !errors.As(err, &lost) || !errors.Is(err, tt.want) {
			t.Errorf("%s: got %v; want a lost connection (%v)", tt.name, err, tt.want)
		}
	}
	// Before started: an error too, not a hang.
	f := startFake(t, func(int) []byte { return []byte{byte(execwire.Started), 0} })
	c, _ := agentclient.New(func(ctx context.Context) (net.Conn, error) {
		nc, err := agentclient.UnixDialer(f.sock)(ctx)
		return &closeAfterAnswer{Conn: nc}, err
	})
	defer c.Close()
	if _, _, err := execOnce(t, c); !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Errorf("a started frame cut short: %v", err)
	}
}

// closeAfterAnswer is a connection whose far end closes once it has
// answered: the reads after the first see the end of the stream.
type closeAfterAnswer struct {
	net.Conn
	reads int
}

func (c *closeAfterAnswer) Read(p []byte) (int, error) {
	c.reads++
	if c.reads > 1 {
		// Give the fake time to have written all: read what is left, then end.
		c.Conn.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
		n, err := c.Conn.Read(p)
		if n > 0 {
			return n, nil
		}
		if ne, ok := err.(net.Error); ok && ne.Timeout() {
			return 0, io.EOF
		}
		return n, err
	}
	return c.Conn.Read(p)
}

// An agent that takes a start and never answers it is an error once the
// wait for started is over, not a hang.
func TestStartedThatNeverComes(t *testing.T) {
	defer agentclient.SetStartedTimeout(500 * time.Millisecond)()
	f := startFake(t, func(int) []byte { return nil })
	_, _, err := execOnce(t, f.client(t))
	if err == nil || !strings.Contains(err.Error(), "did not answer the start of x") {
		t.Fatalf("got %v; want the agent's silence reported", err)
	}
}

// What an agent sends after an exit (output, a second exit) reaches no
// one: not the exec that ended, nor the next one, which runs on a new
// connection.
func TestFramesAfterTheExitAreDropped(t *testing.T) {
	for _, tail := range [][]byte{out("leaked"), exitFrame(execwire.ExitMsg{Code: 7})} {
		f := startFake(t, func(start int) []byte {
			if start == 1 {
				return frames(started(), out("one"), exitFrame(execwire.ExitMsg{Code: 3}), tail)
			}
			return frames(started(), out("two"), exitFrame(execwire.ExitMsg{Code: 4}))
		})
		c := f.client(t)
		st, stdout, err := execOnce(t, c)
		if err != nil || st.Code != 3 || stdout != "one" {
			t.Fatalf("first exec: %+v %q %v", st, stdout, err)
		}
		st, stdout, err = execOnce(t, c)
		if err != nil || st.Code != 4 || stdout != "two" {
			t.Fatalf("second exec: %+v %q %v; want its own answer, nothing of the first's", st, stdout, err)
		}
		if n := f.conns.Load(); n != 2 {
			t.Errorf("%d connections; want the second exec on a new one", n)
		}
	}
}

// A connection whose exec ended cleanly serves the next exec.
func TestAConnectionIsReused(t *testing.T) {
	f := startFake(t, func(start int) []byte { return frames(started(), exitFrame(execwire.ExitMsg{Code: start})) })
	c := f.client(t)
	for i := 1; i <= 3; i++ {
		if st, _, err := execOnce(t, c); err != nil || st.Code != i {
			t.Fatalf("exec %d: %+v %v", i, st, err)
		}
	}
	if n := f.conns.Load(); n != 1 {
		t.Errorf("3 execs in turn took %d connections; want 1", n)
	}
}

// The agent's refusal is its words as one printable line.
func TestRefusalIsSanitized(t *testing.T) {
	f := startFake(t, func(int) []byte {
		return exitFrame(execwire.ExitMsg{Code: -1, Error: "no\x1b]0;owned\x07 such\nfile", Kind: execwire.KindNotFound})
	})
	_, _, err := execOnce(t, f.client(t))
	msg := agentclient.Message(err)
	if !agentclient.IsNotFound(err) || strings.ContainsAny(msg, "\x1b\x07\n") || !strings.Contains(msg, "such") {
		t.Fatalf("refusal %q (%v): want a not-found error without control characters", msg, err)
	}
}
