package controlwire

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// patience bounds every wait of these tests: generous, for a loaded
// machine; a test that needs it has failed.
const patience = time.Minute

// fake serves status and a stream of events, and says when a call's ctx
// ended.
type fake struct {
	Unimplemented
	events   int           // how many events Events sends
	follow   chan struct{} // when not nil, Events then waits for it or ctx
	canceled chan struct{} // closed when a call's ctx ends
	once     sync.Once
}

func (f *fake) Status(context.Context) (*Status, error) {
	return &Status{Name: "sandbox", State: "running", Ready: true}, nil
}

func (f *fake) Events(ctx context.Context, send func(*Event) error) error {
	for i := range f.events {
		if err := send(&Event{Phase: PhaseProvisioning, Message: strings.Repeat("x", i%4096)}); err != nil {
			f.cancel()
			return err
		}
	}
	if f.follow == nil {
		return nil
	}
	select {
	case <-f.follow:
		return nil
	case <-ctx.Done():
		f.cancel()
		return ctx.Err()
	}
}

func (f *fake) cancel() { f.once.Do(func() { close(f.canceled) }) }

func serve(t *testing.T, h Handler, tune func(*Server)) (*Server, string) {
	t.Helper()
	sock := filepath.Join(t.TempDir(), "hostd.sock")
	ln, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	s := NewServer(h)
	if tune != nil {
		tune(s)
	}
	go s.Serve(ln)
	t.Cleanup(s.Close)
	return s, sock
}

// raw connects and sends b as it is.
func raw(t *testing.T, sock string, b []byte) (net.Conn, *bufio.Reader) {
	t.Helper()
	c, err := net.Dial("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	c.SetDeadline(time.Now().Add(patience))
	go c.Write(b) // may block until hostd reads, or fail once it gave up
	return c, bufio.NewReader(c)
}

// lastLine reads the one reply line hostd sends before it closes.
func lastLine(t *testing.T, r *bufio.Reader) Reply {
	t.Helper()
	line, err := readLine(r, MaxReply)
	if err != nil {
		t.Fatalf("no reply: %v", err)
	}
	var rep Reply
	if err := json.Unmarshal(line, &rep); err != nil {
		t.Fatalf("reply %q: %v", line, err)
	}
	// Closed: EOF, or a reset when hostd left part of the request unread.
	if _, err := r.ReadByte(); err == nil || errors.Is(err, os.ErrDeadlineExceeded) {
		t.Errorf("hostd kept the connection open after its last line (%v)", err)
	}
	return rep
}

// stillServes checks that a plain call works.
func stillServes(t *testing.T, sock string) {
	t.Helper()
	c := NewClient(sock)
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), patience)
	defer cancel()
	if st, err := c.Status(ctx); err != nil || st.Name != "sandbox" {
		t.Fatalf("status after that: %+v, %v", st, err)
	}
}

// idle waits until the server holds no connection: no goroutine of its
// is left serving one.
func idle(t *testing.T, s *Server) {
	t.Helper()
	deadline := time.Now().Add(patience)
	for {
		s.mu.Lock()
		n := len(s.conns)
		s.mu.Unlock()
		if n == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d connections still served", n)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestOversizedRequestIsRefused(t *testing.T) {
	s, sock := serve(t, &fake{}, nil)
	// An endless line: hostd reads MaxRequest bytes of it, no more.
	big := append([]byte(`{"call":"set_policy","policy":"`), make([]byte, MaxRequest)...)
	_, r := raw(t, sock, big)
	rep := lastLine(t, r)
	if rep.Code != CodeInvalidArgument || !strings.Contains(rep.Error, "longer than 1048576 bytes") {
		t.Errorf("an oversized request: %+v", rep)
	}
	idle(t, s)
	stillServes(t, sock)
}

func TestMalformedRequestIsRefused(t *testing.T) {
	s, sock := serve(t, &fake{}, nil)
	for _, req := range []string{
		"not json\n",
		`{"call":"open_session","open_session":{"api_key":"sk-ant-s3cret"` + "\n", // cut short
		`{"call":"open_session","open_session":{"api_key":"sk-ant-s3cret"}}}` + "\n",
		`["status"]` + "\n",
		`{"call":"open_session","open_session":"sk-ant-s3cret"}` + "\n",
	} {
		_, r := raw(t, sock, []byte(req))
		rep := lastLine(t, r)
		if rep.Code != CodeInvalidArgument || rep.Error != "the request is not one JSON object of hostd's control API" {
			t.Errorf("%q: %+v", req, rep)
		}
	}
	_, r := raw(t, sock, []byte(`{"call":"format_disk"}`+"\n"))
	if rep := lastLine(t, r); rep.Code != CodeUnimplemented || !strings.Contains(rep.Error, `"format_disk"`) {
		t.Errorf("an unknown call: %+v", rep)
	}
	_, r = raw(t, sock, []byte(`{"call":"open_session"}`+"\n"))
	if rep := lastLine(t, r); rep.Code != CodeInvalidArgument {
		t.Errorf("open_session without a credential: %+v", rep)
	}
	idle(t, s)
	stillServes(t, sock)
}

// A client that connects and sends nothing is dropped at the deadline:
// it does not hold a goroutine of hostd's for as long as it likes.
func TestSilentClientIsDropped(t *testing.T) {
	s, sock := serve(t, &fake{}, func(s *Server) { s.RequestTimeout = 100 * time.Millisecond })
	_, r := raw(t, sock, nil)
	rep := lastLine(t, r)
	if rep.Code != CodeInvalidArgument || rep.Error != "no request within 100ms of connecting" {
		t.Errorf("a silent client: %+v", rep)
	}
	// Half a request is no better.
	_, r = raw(t, sock, []byte(`{"call":"sta`))
	if rep := lastLine(t, r); rep.Code != CodeInvalidArgument {
		t.Errorf("half a request: %+v", rep)
	}
	idle(t, s)
	stillServes(t, sock)
}

// A client that stops reading a stream is dropped once a write has waited
// WriteTimeout, and its call is cancelled.
func TestClientThatStopsReadingIsDropped(t *testing.T) {
	f := &fake{events: 10000, follow: make(chan struct{}), canceled: make(chan struct{})}
	s, sock := serve(t, f, func(s *Server) { s.WriteTimeout = 100 * time.Millisecond })
	c, _ := raw(t, sock, []byte(`{"call":"events"}`+"\n"))
	select {
	case <-f.canceled:
	case <-time.After(patience):
		t.Fatal("the stream to a client that reads nothing still runs")
	}
	idle(t, s)
	c.Close()
}

// Closing the connection cancels the call: a stream, and with it a relay
// session, ends when its client goes, however it goes.
func TestClosingTheConnectionCancelsTheCall(t *testing.T) {
	f := &fake{events: 1, follow: make(chan struct{}), canceled: make(chan struct{})}
	s, sock := serve(t, f, nil)
	c := NewClient(sock)
	stream, err := c.Events(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := stream.Recv(); err != nil {
		t.Fatal(err)
	}
	stream.Close()
	select {
	case <-f.canceled:
	case <-time.After(patience):
		t.Fatal("the call still runs after its client closed the connection")
	}
	idle(t, s)
}

// A stream hostd ends is done (io.EOF), not an error; Shutdown lets it
// deliver its last lines.
func TestShutdownEndsStreamsCleanly(t *testing.T) {
	f := &fake{events: 3, follow: make(chan struct{}), canceled: make(chan struct{})}
	s, sock := serve(t, f, nil)
	c := NewClient(sock)
	stream, err := c.Events(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	for range 3 {
		if _, err := stream.Recv(); err != nil {
			t.Fatal(err)
		}
	}
	close(f.follow) // as hostd ends its event streams on its way out
	ctx, cancel := context.WithTimeout(context.Background(), patience)
	defer cancel()
	s.Shutdown(ctx)
	if _, err := stream.Recv(); !errors.Is(err, io.EOF) {
		t.Fatalf("the stream at shutdown ended with %v, want its end", err)
	}
	if _, err := c.Status(ctx); !errors.Is(err, ErrUnavailable) {
		t.Errorf("status after shutdown: %v, want ErrUnavailable", err)
	}
}

// Shutdown does not wait for a call that does not end past its ctx: it
// cuts it, and the client sees the connection lost.
func TestShutdownCutsCallsThatDoNotEnd(t *testing.T) {
	f := &fake{events: 1, follow: make(chan struct{}), canceled: make(chan struct{})}
	s, sock := serve(t, f, nil)
	stream, err := NewClient(sock).Events(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := stream.Recv(); err != nil { // the call runs
		t.Fatal(err)
	}
	idleAfter := make(chan struct{})
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
		defer cancel()
		s.Shutdown(ctx)
		close(idleAfter)
	}()
	_, err = stream.Recv()
	if !errors.Is(err, ErrUnavailable) || !strings.Contains(err.Error(), "hostd closed the connection") {
		t.Errorf("a call cut at shutdown: %v", err)
	}
	<-f.canceled
	<-idleAfter
}
