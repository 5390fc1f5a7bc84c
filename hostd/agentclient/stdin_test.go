package agentclient_test

import (
	"context"
	"io"
	"strconv"
	"strings"
	"testing"
	"testing/iotest"
	"time"

	"github.com/coworkhq/cowork/hostd/agentclient"
	"github.com/coworkhq/cowork/hostd/agentclient/agenttest"
	"github.com/coworkhq/cowork/internal/execwire"
)

// A Read may return the last bytes together with io.EOF (io.Reader allows
// it, and files, pipes of some kinds and many wrappers do it): those bytes
// are stdin like any others, sent before the end of stdin.
func TestStdinChunkThatCarriesEOFIsDelivered(t *testing.T) {
	a := agenttest.Start(t)
	c := a.Client(t)
	for _, in := range []string{"12345", strings.Repeat("x", 100<<10)} {
		st, out, _ := run(t, c, agentclient.ExecOptions{Argv: []string{"wc", "-c"}, Stdin: iotest.DataErrReader(strings.NewReader(in))})
		if st.Code != 0 || strings.TrimSpace(out) != strconv.Itoa(len(in)) {
			t.Fatalf("wc -c of %d bytes whose last Read carried EOF: %+v %q", len(in), st, out)
		}
	}
}

// A client that sends its start, its stdin and the end of it in one write
// (frames arriving before the process runs): the process gets the data,
// then end of input, and exits. The connection is the client's: its end
// is the client gone (hang-up), not the end of input.
func TestStdinAndItsEndWithTheStartIsEndOfInput(t *testing.T) {
	a := agenttest.Start(t)
	r := dialRaw(t, a)
	r.send(startFrame(execwire.StartMsg{Argv: []string{"wc", "-c"}, Cwd: "/"}),
		execwire.AppendFrame(nil, execwire.Stdin, []byte("hello")),
		execwire.AppendHeader(nil, execwire.CloseStdin, 0))
	exit, out, err := r.recvExit()
	if err != nil {
		t.Fatalf("the process never saw the end of its input (%v); output %q", err, out)
	}
	if exit.Code != 0 || strings.TrimSpace(out) != "5" {
		t.Fatalf("exit %v, output %q; want 0 and 5", exit, out)
	}
}

// On a terminal the end of stdin is the EOF character, as if the user
// pressed Ctrl-D: a program reading its terminal sees its input end, both
// when the client's stdin runs out and when there is none at all.
func TestEndOfStdinOnATerminal(t *testing.T) {
	a := agenttest.Start(t)
	c := a.Client(t)
	for _, in := range []io.Reader{strings.NewReader("hello\n"), nil} {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		var out strings.Builder
		st, err := c.Exec(ctx, agentclient.ExecOptions{
			Argv:   []string{"sh", "-c", `while read x; do :; done; echo "<EOF>"`},
			TTY:    &agentclient.TerminalSize{Rows: 24, Cols: 80},
			Stdin:  in,
			Stdout: &out,
		})
		cancel()
		if err != nil || st.Code != 0 || !strings.Contains(out.String(), "<EOF>") {
			t.Fatalf("stdin %v: %v %+v %q; want the end of input seen", in != nil, err, st, out.String())
		}
	}
}

// gatedReader returns its data only once released, like a terminal the
// user types into after the command ended.
type gatedReader struct {
	release chan struct{}
	data    string
	done    bool
}

func (r *gatedReader) Read(p []byte) (int, error) {
	<-r.release
	if r.done {
		return 0, io.EOF
	}
	r.done = true
	return copy(p, r.data), nil
}

// Execs in turn share a connection; stdin the first one's reader returns
// after it ended is dropped, not sent into the next process's input.
func TestStdinOfAFinishedExecDoesNotReachTheNext(t *testing.T) {
	a := agenttest.Start(t)
	c := a.Client(t)
	late := &gatedReader{release: make(chan struct{}), data: "stale input"}
	if st, _, _ := run(t, c, agentclient.ExecOptions{Argv: []string{"true"}, Stdin: late}); st.Code != 0 {
		t.Fatalf("true: %+v", st)
	}
	// The next exec, on the same connection, reads its stdin until EOF;
	// the first one's reader returns while it runs.
	stdinR, stdinW := io.Pipe()
	var out strings.Builder
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	st, err := c.Exec(ctx, agentclient.ExecOptions{
		Argv: []string{"wc", "-c"}, Stdin: stdinR, Stdout: &out,
		Started: func(int) {
			close(late.release)
			go func() {
				// Time for the stale goroutine to try its send first.
				time.Sleep(200 * time.Millisecond)
				stdinW.Write([]byte("fresh"))
				stdinW.Close()
			}()
		},
	})
	if err != nil || st.Code != 0 || strings.TrimSpace(out.String()) != "5" {
		t.Fatalf("wc -c: %v %+v %q; want only its own 5 bytes", err, st, out.String())
	}
}
