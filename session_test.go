package cowork

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/coworkhq/cowork/hostd/controlwire"
	"github.com/coworkhq/cowork/internal/execwire"
)

// fakeHostd serves the session calls of hostd's control API and an agent
// that records what it is asked to run and answers exit 0.
type fakeHostd struct {
	controlwire.Unimplemented

	mu       sync.Mutex
	opened   []controlwire.OpenSessionRequest
	live     map[string]chan struct{} // session id -> closed by CloseSession
	ended    map[string]string        // session id -> how its stream ended
	starts   []*execwire.StartMsg
	liveAtEx []bool // whether a session lived at each Exec
	ceiling  bool   // end sessions at once, as at their ceiling
	refuse   string // refuse sessions with this Unavailable message
	hexIDs   bool   // session ids as hostd makes them (16 hex digits), not "sessa"
}

const fakePlaceholder = "cowork-session-fake0123"

func (f *fakeHostd) OpenSession(ctx context.Context, req controlwire.OpenSessionRequest, send func(*controlwire.Session) error) error {
	if f.refuse != "" {
		return controlwire.Errorf(controlwire.CodeUnavailable, "%s", f.refuse)
	}
	f.mu.Lock()
	id := "sess" + string(rune('a'+len(f.opened)))
	if f.hexIDs {
		id = fmt.Sprintf("9b1e07c4d2a85f%02x", 0x10+len(f.opened))
	}
	f.opened = append(f.opened, req)
	closed := make(chan struct{})
	if f.live == nil {
		f.live, f.ended = map[string]chan struct{}{}, map[string]string{}
	}
	f.live[id] = closed
	ceiling := f.ceiling
	f.mu.Unlock()
	if err := send(&controlwire.Session{ID: id, Placeholder: fakePlaceholder, BaseURL: "http://192.168.127.1:7891",
		Expires: time.Now().Add(time.Hour)}); err != nil {
		return err
	}
	how, err := "closed", error(nil)
	select {
	case <-ctx.Done():
		how = "stream ended"
	case <-closed:
	}
	if ceiling {
		how, err = "expired", controlwire.Errorf(controlwire.CodeExpired, "ceiling")
	}
	f.mu.Lock()
	delete(f.live, id)
	f.ended[id] = how
	f.mu.Unlock()
	return err
}

func (f *fakeHostd) CloseSession(_ context.Context, id string) (*controlwire.SessionUsage, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if c, ok := f.live[id]; ok {
		close(c)
		delete(f.live, id)
		f.ended[id] = "closed"
		return &controlwire.SessionUsage{Requests: 3, InputTokens: 300, OutputTokens: 60, CostUSD: 0.0018}, nil
	}
	return nil, nil
}

// serveExec is the agent's side of one exec connection: it records each
// start and answers started, then exit 0.
func (f *fakeHostd) serveExec(c net.Conn) {
	defer c.Close()
	br := bufio.NewReader(c)
	if _, err := io.ReadFull(br, make([]byte, len(execwire.Preface))); err != nil {
		return
	}
	r := execwire.NewReader(br, (&execwire.Limits{}).Allow(execwire.Start, execwire.MaxStart).
		Allow(execwire.Stdin, execwire.MaxStdin).Allow(execwire.CloseStdin, 0).Allow(execwire.Signal, 4).Allow(execwire.Resize, 8))
	for {
		typ, n, err := r.Next()
		if err != nil {
			return
		}
		p, err := r.ReadPayload(make([]byte, n), n)
		if err != nil || typ != execwire.Start {
			continue
		}
		var m execwire.StartMsg
		if json.Unmarshal(p, &m) != nil {
			return
		}
		f.mu.Lock()
		f.starts = append(f.starts, &m)
		f.liveAtEx = append(f.liveAtEx, len(f.live) > 0)
		f.mu.Unlock()
		answer := execwire.AppendUint32s(nil, execwire.Started, 42)
		answer, _ = execwire.AppendJSON(answer, execwire.Exit, execwire.ExitMsg{})
		if _, err := c.Write(answer); err != nil {
			return
		}
	}
}

// endedHow waits until session id's stream ended on hostd's side.
func (f *fakeHostd) endedHow(t *testing.T, id string) string {
	t.Helper()
	deadline := time.Now().Add(time.Minute)
	for {
		f.mu.Lock()
		how, ok := f.ended[id]
		f.mu.Unlock()
		if ok {
			return how
		}
		if time.Now().After(deadline) {
			t.Fatalf("session %s still open on hostd's side after a minute", id)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// newFakeClient is a Client of a fake hostd on the instance's sockets.
func newFakeClient(t *testing.T) (*Client, *fakeHostd) {
	t.Helper()
	p := newInstance(t)
	f := &fakeHostd{}
	ln, err := net.Listen("unix", p.HostdSock())
	if err != nil {
		t.Fatal(err)
	}
	srv := controlwire.NewServer(f)
	go srv.Serve(ln)
	t.Cleanup(srv.Close)
	ln, err = net.Listen("unix", p.AgentSock())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func(ln net.Listener) {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go f.serveExec(c)
		}
	}(ln)
	c := newClient("sandbox", p)
	t.Cleanup(func() { c.Close() })
	return c, f
}

// Claude Code in the guest gets the placeholder and the relay's address,
// never the real credential; the session lives while claude runs and is
// closed when it returns.
func TestClaudeGivesTheGuestOnlyThePlaceholder(t *testing.T) {
	for _, cred := range []Credential{
		{APIKey: "sk-ant-real-key-123"},
		{AuthToken: "real-oauth-token-456", Endpoint: "https://user:gw-secret@gateway.example"},
	} {
		c, f := newFakeClient(t)
		st, err := c.Claude(context.Background(), ClaudeOptions{Credential: cred, Env: []string{"ANTHROPIC_MODEL=m"}, Args: []string{"-p"}})
		if err != nil || st.Code != 0 {
			t.Fatalf("claude: %v %+v", err, st)
		}
		f.mu.Lock()
		defer f.mu.Unlock()
		if len(f.opened) != 1 || f.opened[0].APIKey != cred.APIKey || f.opened[0].AuthToken != cred.AuthToken || f.opened[0].Endpoint != cred.Endpoint {
			t.Fatalf("hostd got %v, want the credential", f.opened)
		}
		if len(f.starts) != 2 || !f.liveAtEx[1] {
			t.Fatalf("%d execs, the session alive at claude's: %v", len(f.starts), f.liveAtEx)
		}
		want := "ANTHROPIC_API_KEY=" + fakePlaceholder
		if cred.AuthToken != "" {
			want = "ANTHROPIC_AUTH_TOKEN=" + fakePlaceholder
		}
		claude := f.starts[1]
		env := strings.Join(claude.Env, "\n")
		if !strings.Contains(env, want+"\n") && !strings.HasSuffix(env, want) || !strings.Contains(env, "ANTHROPIC_BASE_URL=http://192.168.127.1:7891") {
			t.Errorf("claude's environment lacks %s and the relay's address:\n%s", want, env)
		}
		for _, s := range f.starts {
			all := strings.Join(append(append([]string{}, s.Argv...), s.Env...), "\n")
			for _, secret := range []string{"real-key", "real-oauth", "gw-secret", "gateway.example"} {
				if strings.Contains(all, secret) {
					t.Errorf("the guest's exec of %q carries %q:\n%s", s.Argv, secret, all)
				}
			}
		}
		if how := f.ended["sessa"]; how != "closed" {
			t.Errorf("the session ended by %q when Claude returned, want closed", how)
		}
	}
}

// Claude's exec is named after its API session unless the caller names
// it, so that one id finds a run's API calls and the flows under its
// claude; a session id that is no exec id (an older hostd's) gets a
// fresh id from the host: the guest never picks its name.
func TestClaudesExecIsNamedAfterItsSession(t *testing.T) {
	for _, c := range []struct {
		hexIDs   bool
		execID   string
		wantExec string
	}{
		{true, "", "9b1e07c4d2a85f10"},
		{true, "0123456789abcdef", "0123456789abcdef"},
		{false, "", "fresh"},
	} {
		cl, f := newFakeClient(t)
		f.hexIDs = c.hexIDs
		var session string
		st, err := cl.Claude(context.Background(), ClaudeOptions{Credential: Credential{APIKey: "sk-ant-test"}, Args: []string{"-p"},
			ExecID: c.execID, OnSession: func(id string) { session = id }})
		if err != nil || st.Code != 0 {
			t.Fatalf("claude: %v %+v", err, st)
		}
		f.mu.Lock()
		got := f.starts[len(f.starts)-1].ExecID
		f.mu.Unlock()
		if c.wantExec == "fresh" && execwire.ValidExecID(got) && got != session {
			got = "fresh"
		}
		if got != c.wantExec || session == "" || c.hexIDs && session != "9b1e07c4d2a85f10" {
			t.Errorf("hex ids %v, ExecID %q: claude's exec id %q, OnSession %q; want exec %q", c.hexIDs, c.execID, got, session, c.wantExec)
		}
	}
}

// hostd refusing the session (its endpoint cannot be reached) is said in
// hostd's words, with nothing of the protocol's, and claude does not run.
func TestClaudeSaysWhyNoSessionOpened(t *testing.T) {
	c, f := newFakeClient(t)
	f.refuse = "the API endpoint https://api.anthropic.com cannot be reached (dial tcp: lookup api.anthropic.com: no such host); check this machine's network connection, or ANTHROPIC_BASE_URL"
	_, err := c.Claude(context.Background(), ClaudeOptions{Credential: Credential{APIKey: "sk-ant-test"}, Args: []string{"-p"}})
	if err == nil || err.Error() != "open an API session: "+f.refuse {
		t.Errorf("claude: %v", err)
	}
	if len(f.starts) != 1 { // the project folder's mkdir only
		t.Errorf("%d execs; claude ran without a session", len(f.starts))
	}
}

func TestSessionCloseAndItsStream(t *testing.T) {
	c, f := newFakeClient(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	s, err := c.OpenSession(ctx, "", "sk-ant-test", "", 0)
	if err != nil {
		t.Fatal(err)
	}
	if s.Placeholder != fakePlaceholder || s.Expires.Before(time.Now()) {
		t.Fatalf("session %+v", s)
	}
	cancel() // ctx bounds the opening only
	select {
	case <-s.Done():
		t.Fatal("the session ended with the context that opened it")
	case <-time.After(100 * time.Millisecond):
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if how := f.endedHow(t, s.ID); how != "closed" {
		t.Fatalf("ended by %s, want closed", how)
	}
	<-s.Done()
	if s.Err() != nil || s.Close() != nil {
		t.Fatalf("a closed session: %v", s.Err())
	}

	// Closing the Client ends its sessions' streams.
	s2, err := c.OpenSession(context.Background(), "", "sk-ant-test", "", 0)
	if err != nil {
		t.Fatal(err)
	}
	c.Close()
	if how := f.endedHow(t, s2.ID); how != "stream ended" {
		t.Fatalf("ended by %s, want by its stream", how)
	}
}

// A session hostd ended at its ceiling says so on Done and Err.
func TestSessionReportsItsCeiling(t *testing.T) {
	c, f := newFakeClient(t)
	f.ceiling = true
	s, err := c.OpenSession(context.Background(), "", "sk-ant-test", "", time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	f.mu.Lock()
	close(f.live[s.ID])
	f.mu.Unlock()
	select {
	case <-s.Done():
	case <-time.After(time.Minute):
		t.Fatal("the session did not see its end")
	}
	if !errors.Is(s.Err(), ErrSessionExpired) || s.Err().Error() != "ceiling" {
		t.Fatalf("Err %v, want ErrSessionExpired in hostd's words", s.Err())
	}
	if err := s.Close(); err != nil {
		t.Fatalf("closing an expired session: %v", err)
	}
}
