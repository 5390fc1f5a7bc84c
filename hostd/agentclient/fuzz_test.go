package agentclient

import (
	"bufio"
	"bytes"
	"context"
	"io"
	"net"
	"testing"
	"time"

	"github.com/coworkhq/cowork/internal/execwire"
)

// FuzzAgentFrames feeds arbitrary bytes to an exec as the agent's answer:
// the host reads frames the guest wrote. Nothing may panic or hang; the
// exec ends with an exit status only when the stream held a well-formed
// started and exit, and the output it hands on never exceeds what the
// stream carried.
func FuzzAgentFrames(f *testing.F) {
	exit := func(m execwire.ExitMsg) []byte { b, _ := execwire.AppendJSON(nil, execwire.Exit, m); return b }
	started := execwire.AppendUint32s(nil, execwire.Started, 7)
	for _, b := range [][]byte{
		append(append(append([]byte{}, started...), execwire.AppendFrame(nil, execwire.Stdout, []byte("hi\n"))...), exit(execwire.ExitMsg{Code: 3})...),
		exit(execwire.ExitMsg{Code: -1, Error: "not found", Kind: execwire.KindNotFound}),
		append(append([]byte{}, started...), exit(execwire.ExitMsg{Code: 137, Signal: "SIGKILL"})...),
		append(append([]byte{}, started...), execwire.AppendHeader(nil, execwire.Stderr, 1<<30)...),
		append(append([]byte{}, started...), 0x7f, 0, 0, 0, 0),
	} {
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		nc := &scriptConn{r: bytes.NewReader(data)}
		br := bufio.NewReaderSize(nc, readBuffer)
		cn := &conn{c: nc, br: br, r: execwire.NewReader(br, agentLimits), prefaced: true}
		var stdout, stderr bytes.Buffer
		x := &execution{conn: cn, o: &ExecOptions{Argv: []string{"x"}, Stdout: &stdout, Stderr: &stderr}, done: make(chan struct{})}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		st, err := x.run(ctx)
		if ctx.Err() != nil {
			t.Fatal("the exec hung on a finite stream")
		}
		if stdout.Len()+stderr.Len() > len(data) {
			t.Fatalf("%d bytes of output from a %d-byte stream", stdout.Len()+stderr.Len(), len(data))
		}
		if err != nil {
			return
		}
		if st.Code < 0 || st.Code > 255 || !signalName(st.Signal) {
			t.Fatalf("accepted exit %+v", st)
		}
		if !bytes.Contains(data, started[:1]) {
			t.Fatal("an exit status without a started frame")
		}
	})
}

// scriptConn is a connection whose far end says r and then closes;
// what is written to it is dropped.
type scriptConn struct {
	net.Conn
	r      io.Reader
	closed bool
}

func (c *scriptConn) Read(p []byte) (int, error) {
	if c.closed {
		return 0, net.ErrClosed
	}
	return c.r.Read(p)
}

func (c *scriptConn) Write(p []byte) (int, error) { return len(p), nil }
func (c *scriptConn) Close() error                { c.closed = true; return nil }
