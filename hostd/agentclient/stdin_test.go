package agentclient_test

import (
	"context"
	"errors"
	"io"
	"strconv"
	"strings"
	"testing"
	"testing/iotest"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/coworkhq/cowork/guestagent/agentpb"
	"github.com/coworkhq/cowork/hostd/agentclient"
	"github.com/coworkhq/cowork/hostd/agentclient/agenttest"
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

// A client that half-closes its side after its last stdin message, with
// no close_stdin, has said all it will: the process gets the data, then
// end of input, and exits.
func TestHalfCloseAfterStdinIsEndOfInput(t *testing.T) {
	a := agenttest.Start(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	stream, err := rawClient(t, a).Exec(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range []*agentpb.ExecRequest{
		{Msg: &agentpb.ExecRequest_Start{Start: &agentpb.ExecStart{Argv: []string{"wc", "-c"}, Cwd: "/"}}},
		{Msg: &agentpb.ExecRequest_Stdin{Stdin: []byte("hello")}},
	} {
		if err := stream.Send(m); err != nil {
			t.Fatal(err)
		}
	}
	if err := stream.CloseSend(); err != nil {
		t.Fatal(err)
	}
	var out strings.Builder
	var exit *agentpb.Exit
	for exit == nil {
		m, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			if status.Code(err) == codes.DeadlineExceeded {
				t.Fatalf("the process never saw the end of its input; output %q", out.String())
			}
			t.Fatal(err)
		}
		out.Write(m.GetStdout())
		exit = m.GetExit()
	}
	if exit == nil || exit.Code != 0 || strings.TrimSpace(out.String()) != "5" {
		t.Fatalf("exit %v, output %q; want 0 and 5", exit, out.String())
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
