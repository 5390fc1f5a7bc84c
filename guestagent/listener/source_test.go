package listener

import (
	"bytes"
	"errors"
	"io"
	"net"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/coworkhq/cowork/internal/agentcall"
	"github.com/coworkhq/cowork/internal/agentwire"
	"github.com/coworkhq/cowork/internal/execwire"
)

func sniffed(t *testing.T, timeout time.Duration) (*sniffer, string) {
	t.Helper()
	inner, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := newSniffer(inner, quiet, timeout, Handlers{})
	t.Cleanup(func() { s.Close() })
	return s, inner.Addr().String()
}

func TestByteSourceAnswersItsPreface(t *testing.T) {
	_, addr := sniffed(t, sniffTimeout)
	for _, n := range []int{0, 1, 3<<20 + 17} {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := io.WriteString(c, agentwire.SourcePreface+strconv.Itoa(n)+"\n"); err != nil {
			t.Fatal(err)
		}
		got, err := io.ReadAll(c)
		c.Close()
		if err != nil || len(got) != n || bytes.Count(got, []byte{0}) != n {
			t.Fatalf("asked for %d zero bytes, got %d (%d zeros), err %v", n, len(got), bytes.Count(got, []byte{0}), err)
		}
	}
}

func TestByteSourceRefusesABadLength(t *testing.T) {
	_, addr := sniffed(t, sniffTimeout)
	for _, bad := range []string{"lots", "-1", "99999999999999", strings.Repeat("1", 40)} {
		c, _ := net.Dial("tcp", addr)
		io.WriteString(c, agentwire.SourcePreface+bad+"\n")
		got, _ := io.ReadAll(c)
		c.Close()
		if !strings.HasPrefix(string(got), "want cowork-source BYTES") {
			t.Errorf("%q: answered %q, want the usage line", bad, got)
		}
	}
}

func TestOtherChannelsPassWithTheirFirstBytes(t *testing.T) {
	s, addr := sniffed(t, sniffTimeout)
	const preface = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" // what a gRPC client sends first
	go func() {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			return
		}
		io.WriteString(c, preface+"and the rest")
		c.(*net.TCPConn).CloseWrite()
		io.Copy(io.Discard, c)
	}()
	c, err := s.Accept()
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	got, err := io.ReadAll(c)
	if err != nil || string(got) != preface+"and the rest" {
		t.Fatalf("the channel read %q (%v), want every byte the client sent", got, err)
	}
}

func TestASilentChannelIsClosedNotServed(t *testing.T) {
	s, addr := sniffed(t, 100*time.Millisecond)
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	io.WriteString(c, "PRI") // too little to tell
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := c.Read(make([]byte, 1)); !errors.Is(err, io.EOF) {
		t.Fatalf("a channel that sent 3 bytes stayed open: %v", err)
	}
	accepted := make(chan net.Conn, 1)
	go func() {
		if c, err := s.Accept(); err == nil {
			accepted <- c
		}
	}()
	select {
	case <-accepted:
		t.Fatal("the silent channel reached Accept")
	case <-time.After(200 * time.Millisecond):
	}
}

func TestClosingTheSnifferEndsAccept(t *testing.T) {
	s, _ := sniffed(t, sniffTimeout)
	errc := make(chan error, 1)
	go func() { _, err := s.Accept(); errc <- err }()
	s.Close()
	select {
	case err := <-errc:
		if !errors.Is(err, net.ErrClosed) {
			t.Fatalf("Accept after Close: %v, want net.ErrClosed", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Accept still blocked after Close")
	}
}

// An exec or call channel goes to its handler with its preface read, and
// never to Accept or the other handler.
func TestExecAndCallChannelsGoToTheirHandlers(t *testing.T) {
	for _, preface := range []string{execwire.Preface, agentcall.Preface} {
		inner, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		got := make(chan string, 2)
		handler := func(kind string) func(net.Conn) {
			return func(c net.Conn) {
				defer c.Close()
				b, _ := io.ReadAll(c)
				got <- kind + ":" + string(b)
			}
		}
		s := newSniffer(inner, quiet, sniffTimeout, Handlers{Exec: handler(execwire.Preface), Call: handler(agentcall.Preface)})
		t.Cleanup(func() { s.Close() })
		accepted := make(chan net.Conn, 1)
		go func() {
			if c, err := s.Accept(); err == nil {
				accepted <- c
			}
		}()
		c, err := net.Dial("tcp", inner.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		io.WriteString(c, preface+"frames")
		c.(*net.TCPConn).CloseWrite()
		defer c.Close()
		select {
		case b := <-got:
			if b != preface+":frames" {
				t.Fatalf("%q: the handlers read %q, want its own to read what followed the preface", preface, b)
			}
		case <-accepted:
			t.Fatalf("a %q channel reached Accept", preface)
		case <-time.After(10 * time.Second):
			t.Fatalf("the %q handler never got the channel", preface)
		}
	}
}
