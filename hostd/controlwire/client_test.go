package controlwire

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"path/filepath"
	"strings"
	"testing"
)

// rawHostd answers each connection with answer, after reading its request.
func rawHostd(t *testing.T, answer func(c net.Conn, req string)) string {
	t.Helper()
	sock := filepath.Join(t.TempDir(), "hostd.sock")
	ln, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				if req, err := bufio.NewReader(c).ReadString('\n'); err == nil {
					answer(c, req)
				}
			}()
		}
	}()
	return sock
}

// A hostd (or whatever holds its socket) that sends an endless line costs
// the client MaxReply bytes, then an error.
func TestClientBoundsWhatItReads(t *testing.T) {
	sock := rawHostd(t, func(c net.Conn, _ string) {
		chunk := []byte(strings.Repeat("x", 64<<10))
		for {
			if _, err := c.Write(chunk); err != nil {
				return
			}
		}
	})
	c := NewClient(sock)
	defer c.Close()
	_, err := c.Status(context.Background())
	if err == nil || !strings.Contains(err.Error(), "longer than 1048576 bytes") {
		t.Errorf("an endless reply: %v", err)
	}
}

// A hostd that goes away before the call ended is ErrUnavailable, saying
// so; a socket nobody serves too.
func TestClientReportsAHostdThatWentAway(t *testing.T) {
	sock := rawHostd(t, func(c net.Conn, req string) {
		if strings.Contains(req, `"events"`) {
			c.Write([]byte(`{"event":{"phase":"kernel"}}` + "\n"))
		}
	})
	c := NewClient(sock)
	defer c.Close()
	if _, err := c.Status(context.Background()); !errors.Is(err, ErrUnavailable) || !strings.Contains(err.Error(), "hostd closed the connection") {
		t.Errorf("status cut short: %v", err)
	}
	stream, err := c.Events(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if ev, err := stream.Recv(); err != nil || ev.Phase != PhaseKernel {
		t.Fatalf("the first event: %+v, %v", ev, err)
	}
	if _, err := stream.Recv(); !errors.Is(err, ErrUnavailable) {
		t.Errorf("a stream cut short: %v", err)
	}
	gone := NewClient(filepath.Join(t.TempDir(), "none.sock"))
	if _, err := gone.Status(context.Background()); !errors.Is(err, ErrUnavailable) || !strings.Contains(err.Error(), "hostd does not answer on") {
		t.Errorf("no hostd: %v", err)
	}
}

// erring answers every plain call with err.
type erring struct {
	Unimplemented
	err error
}

func (e *erring) Stop(context.Context, StopRequest) error { return e.err }

// An error crosses the wire as its code and hostd's words: the client's
// error is those words, and errors.Is matches its code's sentinel only.
func TestErrorsKeepTheirCodeAndWords(t *testing.T) {
	for _, c := range []struct {
		err  error
		want error
	}{
		{Errorf(CodeInvalidArgument, "policy: bad"), ErrInvalidArgument},
		{Errorf(CodeUnavailable, "the guest network is not up yet"), ErrUnavailable},
		{Errorf(CodeExpired, "relay session s1 reached its ceiling"), ErrExpired},
		{errors.New("disk full"), ErrInternal},
	} {
		e := &erring{err: c.err}
		_, sock := serve(t, e, nil)
		client := NewClient(sock)
		err := client.Stop(context.Background(), StopRequest{})
		client.Close()
		if !errors.Is(err, c.want) || err.Error() != c.err.Error() {
			t.Errorf("%v: got %v", c.err, err)
		}
		for _, other := range []error{ErrInvalidArgument, ErrUnavailable, ErrExpired, ErrInternal, ErrUnimplemented} {
			if other != c.want && errors.Is(err, other) {
				t.Errorf("%v matches %v too", err, other)
			}
		}
	}
	_, sock := serve(t, &Unimplemented{}, nil)
	if _, err := NewClient(sock).CloseSession(context.Background(), "s"); !errors.Is(err, ErrUnimplemented) {
		t.Errorf("a call the server does not serve: %v", err)
	}
}

// A request for a session prints without its secret, whatever the verb.
func TestSessionRequestKeepsItsSecret(t *testing.T) {
	r := OpenSessionRequest{Endpoint: "https://u:pw-s3cret@gw.example", APIKey: "sk-ant-s3cret", TTLSeconds: 60}
	for _, verb := range []string{"%v", "%+v", "%#v", "%s"} {
		if s := fmt.Sprintf(verb, r); strings.Contains(s, "s3cret") || !strings.Contains(s, "an API key") {
			t.Errorf("%s: %s", verb, s)
		}
		if s := fmt.Sprintf(verb, &Request{Call: CallOpenSession, OpenSession: &r}); strings.Contains(s, "s3cret") {
			t.Errorf("%s of the request: %s", verb, s)
		}
	}
}

// Phases go by name, so that the wire reads the same in any language; a
// name from a newer hostd is no error.
func TestPhasesGoByName(t *testing.T) {
	b, err := json.Marshal(Event{Phase: PhaseAgentConnected})
	if err != nil || !strings.Contains(string(b), `"phase":"agent_connected"`) {
		t.Fatalf("%s %v", b, err)
	}
	for p := PhaseUnspecified; p <= PhaseStopped; p++ {
		var back Phase
		if err := back.UnmarshalText([]byte(p.String())); err != nil || back != p {
			t.Errorf("%s comes back as %s", p, back)
		}
	}
	var ev Event
	if err := json.Unmarshal([]byte(`{"phase":"teleported"}`), &ev); err != nil || ev.Phase != PhaseUnspecified {
		t.Errorf("an unknown phase: %v, %v", ev.Phase, err)
	}
}
