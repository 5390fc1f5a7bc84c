package splice

import (
	"bytes"
	"crypto/rand"
	"errors"
	"io"
	"net"
	"os"
	"sync"
	"testing"
	"time"
)

// deadline bounds every wait: generous, for a loaded machine; a test that
// reaches it failed (the splice hung).
const deadline = time.Minute

// tcpPair is a connected pair of loopback TCP connections.
func tcpPair(t *testing.T) (client, server *net.TCPConn) {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	accepted := make(chan net.Conn, 1)
	go func() {
		c, _ := l.Accept()
		accepted <- c
	}()
	c, err := net.Dial("tcp", l.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	s := <-accepted
	if s == nil {
		t.Fatal("accept failed")
	}
	t.Cleanup(func() { c.Close(); s.Close() })
	c.SetDeadline(time.Now().Add(deadline))
	return c.(*net.TCPConn), s.(*net.TCPConn)
}

// joined is a splice between two TCP pairs: the test plays the peers,
// aPeer (on a's far side) and bPeer (on b's).
type joined struct {
	aPeer, bPeer *net.TCPConn
	done         chan Result
}

func join(t *testing.T, opt Options, wrap func(a, b net.Conn) (net.Conn, net.Conn)) *joined {
	t.Helper()
	aPeer, a := tcpPair(t)
	bPeer, b := tcpPair(t)
	var ac, bc net.Conn = a, b
	if wrap != nil {
		ac, bc = wrap(a, b)
	}
	j := &joined{aPeer: aPeer, bPeer: bPeer, done: make(chan Result, 1)}
	go func() { j.done <- Join(ac, bc, opt) }()
	return j
}

func (j *joined) result(t *testing.T) Result {
	t.Helper()
	select {
	case r := <-j.done:
		return r
	case <-time.After(deadline):
		t.Fatal("Join did not return")
		return Result{}
	}
}

// readAll reads c to its end (EOF), failing on any other error.
func readAll(t *testing.T, c net.Conn) []byte {
	t.Helper()
	b, err := io.ReadAll(c)
	if err != nil {
		t.Fatalf("reading to the end: %v (after %d bytes)", err, len(b))
	}
	return b
}

// TestHalfCloseEachWay: a side that closes its way is heard as EOF on the
// other side, which can still answer; and the same the other way round.
func TestHalfCloseEachWay(t *testing.T) {
	for _, first := range []string{"a", "b"} {
		t.Run(first+" closes first", func(t *testing.T) {
			j := join(t, Options{}, nil)
			asker, answerer := j.aPeer, j.bPeer
			if first == "b" {
				asker, answerer = j.bPeer, j.aPeer
			}
			io.WriteString(asker, "request")
			asker.CloseWrite()
			if got := readAll(t, answerer); string(got) != "request" {
				t.Fatalf("the far side read %q", got)
			}
			if _, err := io.WriteString(answerer, "the answer"); err != nil {
				t.Fatalf("answering after the asker's half-close: %v", err)
			}
			answerer.CloseWrite()
			if got := readAll(t, asker); string(got) != "the answer" {
				t.Fatalf("the asker read %q after its half-close", got)
			}
			r := j.result(t)
			ab, ba := int64(len("request")), int64(len("the answer"))
			if first == "b" {
				ab, ba = ba, ab
			}
			if r.AToB != ab || r.BToA != ba || r.Err != nil {
				t.Fatalf("result %+v, want %d and %d bytes, no error", r, ab, ba)
			}
		})
	}
}

// TestCountsAndDataBothWaysAtOnce: a bulk transfer each way at the same
// time arrives whole, and is counted to the byte.
func TestCountsAndDataBothWaysAtOnce(t *testing.T) {
	toB, toA := make([]byte, 3<<20+17), make([]byte, 1<<20+5)
	rand.Read(toB)
	rand.Read(toA)
	var tapped bytes.Buffer
	var mu sync.Mutex
	j := join(t, Options{Tap: func(p []byte) { mu.Lock(); tapped.Write(p); mu.Unlock() }}, nil)
	var wg sync.WaitGroup
	var gotB, gotA []byte
	wg.Go(func() { j.aPeer.Write(toB); j.aPeer.CloseWrite() })
	wg.Go(func() { j.bPeer.Write(toA); j.bPeer.CloseWrite() })
	wg.Go(func() { gotB, _ = io.ReadAll(j.bPeer) })
	wg.Go(func() { gotA, _ = io.ReadAll(j.aPeer) })
	wg.Wait()
	if !bytes.Equal(gotB, toB) || !bytes.Equal(gotA, toA) {
		t.Fatalf("b's peer got %d of %d bytes, a's %d of %d, or not the same", len(gotB), len(toB), len(gotA), len(toA))
	}
	r := j.result(t)
	if r.AToB != int64(len(toB)) || r.BToA != int64(len(toA)) || r.Err != nil {
		t.Fatalf("result %+v, want %d and %d bytes", r, len(toB), len(toA))
	}
	mu.Lock()
	defer mu.Unlock()
	if !bytes.Equal(tapped.Bytes(), toB) {
		t.Fatalf("the tap saw %d bytes, not the %d that went from a to b", tapped.Len(), len(toB))
	}
}

// TestOneSideErrorEndsBoth: b's peer resets its connection while a's peer
// stays open and silent. Join must not wait for a's peer: it closes both
// and says why, so that a's peer hears of the end.
func TestOneSideErrorEndsBoth(t *testing.T) {
	j := join(t, Options{}, nil)
	io.WriteString(j.aPeer, "hello")
	buf := make([]byte, 5)
	if _, err := io.ReadFull(j.bPeer, buf); err != nil {
		t.Fatal(err)
	}
	j.bPeer.SetLinger(0) // close with a reset
	j.bPeer.Close()
	r := j.result(t)
	if r.Err == nil || r.AToB != 5 {
		t.Fatalf("result %+v, want the reset as the error, and 5 bytes a to b", r)
	}
	if k, err := j.aPeer.Read(buf); err == nil {
		t.Fatalf("a's peer read %q after b's side broke; want its connection ended", buf[:k])
	}
}

// TestClosedFromOutsideEndsJoin: the idle reaper closes a flow's guest
// side from outside while both peers are silent; the splice ends and the
// other side is closed with it.
func TestClosedFromOutsideEndsJoin(t *testing.T) {
	var a net.Conn
	j := join(t, Options{}, func(ac, bc net.Conn) (net.Conn, net.Conn) { a = ac; return ac, bc })
	a.Close()
	r := j.result(t)
	if r.Err == nil {
		t.Fatalf("result %+v, want the closed connection's error", r)
	}
	if got := readAll(t, j.bPeer); len(got) != 0 {
		t.Fatalf("b's peer read %q", got)
	}
}

// TestCloseOnEnd: with CloseOnEnd, one side's clean end closes both at
// once: the other side's peer hears the end without having ended itself.
func TestCloseOnEnd(t *testing.T) {
	j := join(t, Options{CloseOnEnd: true}, nil)
	io.WriteString(j.aPeer, "bye")
	j.aPeer.CloseWrite()
	if got := readAll(t, j.bPeer); string(got) != "bye" {
		t.Fatalf("b's peer read %q", got)
	}
	if k, err := j.aPeer.Read(make([]byte, 1)); k != 0 || err == nil {
		t.Fatalf("a's peer read %d bytes, %v; want its connection closed without b's peer closing", k, err)
	}
	if r := j.result(t); r.Err != nil || r.AToB != 3 {
		t.Fatalf("result %+v: a clean end, and CloseOnEnd's own closing, are no error", r)
	}
}

// readSizes records the buffer sizes a connection is read with.
type readSizes struct {
	net.Conn
	mu    sync.Mutex
	sizes []int
}

func (c *readSizes) Read(p []byte) (int, error) {
	c.mu.Lock()
	c.sizes = append(c.sizes, len(p))
	c.mu.Unlock()
	return c.Conn.Read(p)
}

func (c *readSizes) CloseWrite() error { return c.Conn.(*net.TCPConn).CloseWrite() }

func (c *readSizes) largest() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	m := 0
	for _, s := range c.sizes {
		m = max(m, s)
	}
	return m
}

// TestQuietFlowsKeepSmallBuffers: a direction that carries little reads
// with the small buffer; one that fills it moves to the large one.
func TestQuietFlowsKeepSmallBuffers(t *testing.T) {
	var a *readSizes
	j := join(t, Options{}, func(ac, bc net.Conn) (net.Conn, net.Conn) {
		a = &readSizes{Conn: ac}
		return a, bc
	})
	for range 3 {
		io.WriteString(j.aPeer, "small talk")
		if _, err := io.ReadFull(j.bPeer, make([]byte, len("small talk"))); err != nil {
			t.Fatal(err)
		}
	}
	if got := a.largest(); got != smallBuffer {
		t.Fatalf("a quiet direction read with %d bytes, want %d", got, smallBuffer)
	}
	bulk := make([]byte, 8<<20)
	go func() { j.aPeer.Write(bulk); j.aPeer.CloseWrite() }()
	if got := readAll(t, j.bPeer); len(got) != len(bulk) {
		t.Fatalf("b's peer got %d bytes of %d", len(got), len(bulk))
	}
	if got := a.largest(); got != largeBuffer {
		t.Fatalf("a bulk transfer read with at most %d bytes, want %d", got, largeBuffer)
	}
	j.bPeer.CloseWrite()
	if r := j.result(t); r.Err != nil {
		t.Fatal(r.Err)
	}
}

// errConn fails every write.
type errConn struct{ net.Conn }

var errBroken = errors.New("broken on purpose")

func (errConn) Write([]byte) (int, error) { return 0, errBroken }

// TestWriteErrorIsReported: the error a write fails with is Join's, and
// the source's peer hears the end.
func TestWriteErrorIsReported(t *testing.T) {
	j := join(t, Options{}, func(ac, bc net.Conn) (net.Conn, net.Conn) { return ac, errConn{bc} })
	io.WriteString(j.aPeer, "lost")
	if r := j.result(t); !errors.Is(r.Err, errBroken) || r.AToB != 0 {
		t.Fatalf("result %+v, want the write's error and nothing counted", r)
	}
	if k, err := j.aPeer.Read(make([]byte, 1)); k != 0 || err == nil {
		t.Fatalf("a's peer: %d bytes, %v; want its connection ended", k, err)
	}
}

// TestBeforeBHoldsBsFirstBytes: BeforeB runs once, when b's first bytes
// are in, and a hears nothing from b until it returns; a's bytes go to b
// meanwhile, and b's later bytes pass without it.
func TestBeforeBHoldsBsFirstBytes(t *testing.T) {
	release := make(chan struct{})
	calls := make(chan struct{}, 4)
	j := join(t, Options{BeforeB: func() {
		calls <- struct{}{}
		<-release
	}}, nil)
	io.WriteString(j.aPeer, "request")
	got := make([]byte, len("request"))
	if _, err := io.ReadFull(j.bPeer, got); err != nil || string(got) != "request" {
		t.Fatalf("b's peer read %q, %v, before b said anything", got, err)
	}
	io.WriteString(j.bPeer, "answer")
	select {
	case <-calls:
	case <-time.After(deadline):
		t.Fatal("BeforeB was not called with b's first bytes in")
	}
	j.aPeer.SetReadDeadline(time.Now().Add(100 * time.Millisecond))
	if k, err := j.aPeer.Read(make([]byte, 16)); k != 0 || !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("a's peer read %d bytes (%v) while BeforeB held them", k, err)
	}
	close(release)
	j.aPeer.SetReadDeadline(time.Now().Add(deadline))
	io.WriteString(j.bPeer, " and more")
	j.bPeer.CloseWrite()
	j.aPeer.CloseWrite()
	if got := readAll(t, j.aPeer); string(got) != "answer and more" {
		t.Fatalf("a's peer read %q", got)
	}
	j.result(t)
	if len(calls) != 0 {
		t.Errorf("BeforeB was called %d more times", len(calls))
	}
}
