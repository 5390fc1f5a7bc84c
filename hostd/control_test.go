package hostd

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/coworkhq/cowork"
	"github.com/coworkhq/cowork/hostd/controlwire"
	"github.com/coworkhq/cowork/hostd/netstack"
	"github.com/coworkhq/cowork/internal/syncbuf"
)

// sessionClientEnv makes the test binary a client that opens a session on
// the control socket it names (for the endpoint sessionEndpointEnv names),
// prints the placeholder and waits to be killed.
const (
	sessionClientEnv   = "COWORK_TEST_SESSION_CLIENT"
	sessionEndpointEnv = "COWORK_TEST_SESSION_ENDPOINT"
)

func TestMain(m *testing.M) {
	if sock := os.Getenv(learnClientEnv); sock != "" {
		if err := learnClient(sock); err != nil {
			fmt.Fprintln(os.Stderr, "learn client:", err)
			os.Exit(1)
		}
		return
	}
	if sock := os.Getenv(sessionClientEnv); sock != "" {
		if err := sessionClient(sock); err != nil {
			fmt.Fprintln(os.Stderr, "session client:", err)
			os.Exit(1)
		}
		return
	}
	os.Exit(m.Run())
}

func sessionClient(sock string) error {
	stream, err := controlwire.NewClient(sock).OpenSession(context.Background(), controlwire.OpenSessionRequest{Endpoint: os.Getenv(sessionEndpointEnv), APIKey: "sk-ant-killed-client"})
	if err != nil {
		return err
	}
	r, err := stream.Recv()
	if err != nil {
		return err
	}
	fmt.Println(r.Placeholder)
	select {} // until killed
}

type controlTest struct {
	d    *Daemon
	sock string
	// endpoint is an API endpoint that accepts connections, for sessions
	// that name none: a session opens only when its endpoint answers.
	endpoint string
	api      *controlwire.Client
	net      *netstack.Stack
	log      *syncbuf.Buffer
	srv      *controlwire.Server
}

// newControlTest serves hostd's control API on a socket, with a guest
// network (no guest attached) and hostd's log captured.
func newControlTest(t *testing.T) *controlTest {
	t.Helper()
	logs := &syncbuf.Buffer{}
	log := slog.New(slog.NewTextHandler(logs, nil))
	stack, err := netstack.New(netstack.Config{GuestMAC: netstack.GuestMAC("test"), LANs: []netip.Prefix{}, Resolvers: []string{"127.0.0.1:9"}, Log: log})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(stack.Close)
	d := &Daemon{name: "test", log: log, events: newEvents(), net: stack, closing: make(chan struct{})}
	sock := filepath.Join(t.TempDir(), "hostd.sock")
	ln, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	srv := controlwire.NewServer(&controlServer{d: d})
	go srv.Serve(ln)
	t.Cleanup(srv.Close)
	api := controlwire.NewClient(sock)
	t.Cleanup(func() { api.Close() })
	endpoint, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { endpoint.Close() })
	go func() {
		for {
			c, err := endpoint.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()
	return &controlTest{d: d, sock: sock, endpoint: "http://" + endpoint.Addr().String(), api: api, net: stack, log: logs, srv: srv}
}

// open opens a session and returns its first answer and the stream.
func (c *controlTest) open(t *testing.T, ctx context.Context, req controlwire.OpenSessionRequest) (*controlwire.Session, *controlwire.Stream[controlwire.Session]) {
	t.Helper()
	if req.Endpoint == "" {
		req.Endpoint = c.endpoint
	}
	stream, err := c.api.OpenSession(ctx, req)
	if err != nil {
		t.Fatal(err)
	}
	r, err := stream.Recv()
	if err != nil {
		t.Fatal(err)
	}
	if _, _, why := c.net.Sessions().Lookup(r.Placeholder); why != "" {
		t.Fatalf("a session just opened is refused: %s", why)
	}
	return r, stream
}

// waitRefused waits until the relay refuses the placeholder, for why.
func (c *controlTest) waitRefused(t *testing.T, placeholder string, why netstack.Refusal) {
	t.Helper()
	deadline := time.Now().Add(time.Minute)
	for {
		_, _, got := c.net.Sessions().Lookup(placeholder)
		if got == why {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("the placeholder is %q after a minute, want %q\nhostd's log:\n%s", got, why, c.log.String())
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestSessionEndsWithItsStream(t *testing.T) {
	c := newControlTest(t)
	ctx, cancel := context.WithCancel(context.Background())
	r, _ := c.open(t, ctx, controlwire.OpenSessionRequest{APIKey: "sk-ant-test"})
	if r.BaseURL != fmt.Sprintf("http://%s:%d", netstack.GatewayIP, netstack.RelayPort) || r.ID == "" {
		t.Fatalf("answer %+v", r)
	}
	if life := time.Until(r.Expires); life > netstack.MaxSessionTTL || life < netstack.MaxSessionTTL-time.Hour {
		t.Errorf("a session asking no ceiling lives %v, want %v", life, netstack.MaxSessionTTL)
	}
	cancel()
	c.waitRefused(t, r.Placeholder, netstack.Ended)
	if !strings.Contains(c.log.String(), "relay session closed: its client's stream ended") {
		t.Errorf("hostd's log does not say why the session closed:\n%s", c.log.String())
	}
}

// A client killed with SIGKILL closes nothing itself: its socket closing
// is what ends the session.
func TestSessionEndsWhenItsClientIsKilled(t *testing.T) {
	c := newControlTest(t)
	cmd := exec.Command(os.Args[0])
	cmd.Env = append(os.Environ(), sessionClientEnv+"="+c.sock, sessionEndpointEnv+"="+c.endpoint)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer cmd.Process.Kill()
	line := make(chan string, 1)
	go func() {
		s, _ := bufio.NewReader(out).ReadString('\n')
		line <- strings.TrimSpace(s)
		io.Copy(io.Discard, out)
	}()
	var placeholder string
	select {
	case placeholder = <-line:
	case <-time.After(time.Minute):
		t.Fatalf("the client printed no placeholder in a minute: %s", stderr.String())
	}
	if _, _, why := c.net.Sessions().Lookup(placeholder); why != "" {
		t.Fatalf("the client's session is refused (%q) while it runs: %s", why, stderr.String())
	}
	if err := cmd.Process.Kill(); err != nil { // SIGKILL
		t.Fatal(err)
	}
	cmd.Wait()
	c.waitRefused(t, placeholder, netstack.Ended)
}

// The ceiling ends the session and its stream, which says so.
func TestSessionCeilingEndsItsStream(t *testing.T) {
	c := newControlTest(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	r, stream := c.open(t, ctx, controlwire.OpenSessionRequest{AuthToken: "oauth-test", TTLSeconds: 1})
	if _, err := stream.Recv(); !errors.Is(err, controlwire.ErrExpired) {
		t.Fatalf("the stream of a session past its ceiling ended with %v, want ErrExpired", err)
	}
	c.waitRefused(t, r.Placeholder, netstack.Expired)
}

func TestCloseSessionEndsItsStream(t *testing.T) {
	c := newControlTest(t)
	r, stream := c.open(t, context.Background(), controlwire.OpenSessionRequest{APIKey: "sk-ant-test"})
	u, err := c.api.CloseSession(context.Background(), r.ID)
	if err != nil || u == nil || u.Requests != 0 {
		t.Fatalf("%+v %v", u, err)
	}
	if _, _, why := c.net.Sessions().Lookup(r.Placeholder); why != netstack.Ended {
		t.Fatalf("after CloseSession the placeholder is %q, want ended", why)
	}
	if _, err := stream.Recv(); !errors.Is(err, io.EOF) {
		t.Fatalf("the stream of a closed session ended with %v, want its end", err)
	}
}

// A session's budget and price table are checked when it opens: nonsense
// refuses it, naming what to fix, before anything runs in the guest.
func TestSessionRefusesABadBudgetOrPriceTable(t *testing.T) {
	home := t.TempDir()
	t.Setenv("COWORK_HOME", home)
	c := newControlTest(t)
	for req, want := range map[controlwire.OpenSessionRequest]string{
		{APIKey: "k", Endpoint: c.endpoint, MaxTokensTotal: -1}: "the session's token budget -1: want a whole number of tokens",
		{APIKey: "k", Endpoint: c.endpoint, MaxCostUSD: 1e9}:    "the session's cost budget 1e+09",
	} {
		stream, err := c.api.OpenSession(context.Background(), req)
		if err == nil {
			_, err = stream.Recv()
		}
		if !errors.Is(err, controlwire.ErrInvalidArgument) || !strings.Contains(err.Error(), want) {
			t.Errorf("%v, want %q", err, want)
		}
	}
	prices := filepath.Join(home, "prices.json")
	os.WriteFile(prices, []byte(`{"models": {"m": {"input": -3, "output": 1}}}`), 0o600)
	stream, err := c.api.OpenSession(context.Background(), controlwire.OpenSessionRequest{APIKey: "k", Endpoint: c.endpoint})
	if err == nil {
		_, err = stream.Recv()
	}
	if !errors.Is(err, controlwire.ErrInvalidArgument) || !strings.Contains(err.Error(), "prices file "+prices+`: models["m"].input is -3`) {
		t.Fatalf("%v", err)
	}
	os.WriteFile(prices, []byte(`{"models": {"m": {"input": 3, "output": 1}}}`), 0o600)
	r, _ := c.open(t, context.Background(), controlwire.OpenSessionRequest{APIKey: "k", What: "ask", MaxTokensTotal: 1000})
	if u, err := c.api.CloseSession(context.Background(), r.ID); err != nil || u == nil {
		t.Fatalf("%+v %v", u, err)
	}
}

// hostd on its way out ends the sessions too: they would otherwise hold
// its exit up for as long as their clients keep them, and the session's
// placeholder stops working.
func TestHostdExitEndsTheSessions(t *testing.T) {
	c := newControlTest(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	r, stream := c.open(t, ctx, controlwire.OpenSessionRequest{APIKey: "sk-ant-test"})
	close(c.d.closing)
	if _, err := stream.Recv(); !errors.Is(err, controlwire.ErrUnavailable) || !strings.Contains(err.Error(), "the instance stopped") {
		t.Fatalf("the session's stream at hostd's exit ended with %v, want Unavailable", err)
	}
	c.waitRefused(t, r.Placeholder, netstack.Ended)
}

// hostd's log names the session and its endpoint, never a secret: not the
// key, nor the endpoint's password, user or query.
func TestSessionLogsNoSecret(t *testing.T) {
	c := newControlTest(t)
	ctx, cancel := context.WithCancel(context.Background())
	host := strings.TrimPrefix(c.endpoint, "http://")
	r, _ := c.open(t, ctx, controlwire.OpenSessionRequest{
		Endpoint: "http://gw-user:gw-s3cret@" + host + "/anthropic?token=query-s3cret", APIKey: "sk-ant-s3cret-key"})
	cancel()
	c.waitRefused(t, r.Placeholder, netstack.Ended)
	// An endpoint that is no http(s) URL is refused without being quoted.
	stream, err := c.api.OpenSession(context.Background(), controlwire.OpenSessionRequest{Endpoint: "ftp://u:bad-s3cret@x", APIKey: "k"})
	if err == nil {
		_, err = stream.Recv()
	}
	if !errors.Is(err, controlwire.ErrInvalidArgument) || strings.Contains(err.Error(), "s3cret") {
		t.Errorf("an ftp endpoint: %v, want InvalidArgument without its password", err)
	}
	log := c.log.String()
	if !strings.Contains(log, "relay session opened") || !strings.Contains(log, host+"/anthropic") || !strings.Contains(log, r.ID) {
		t.Fatalf("the log does not say which session opened where:\n%s", log)
	}
	for _, secret := range []string{"s3cret", "gw-user"} {
		if strings.Contains(log, secret) {
			t.Errorf("hostd's log holds %q:\n%s", secret, log)
		}
	}
}

// A session whose endpoint cannot be reached is refused when it opens,
// at once, saying which endpoint and what to check (instead of Claude
// Code retrying in silence for minutes), without the endpoint's secrets.
func TestSessionRefusedWhenItsEndpointCannotBeReached(t *testing.T) {
	c := newControlTest(t)
	closed, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	host := closed.Addr().String()
	closed.Close()
	stream, err := c.api.OpenSession(context.Background(), controlwire.OpenSessionRequest{
		Endpoint: "http://gw-user:gw-s3cret@" + host + "/v1?token=query-s3cret", APIKey: "sk-ant-s3cret-key"})
	if err == nil {
		_, err = stream.Recv()
	}
	want := "the API endpoint http://xxxxx@" + host + "/v1?xxxxx cannot be reached (dial tcp " + host + ": connect: connection refused); check this machine's network connection, or ANTHROPIC_BASE_URL"
	if !errors.Is(err, controlwire.ErrUnavailable) || err.Error() != want {
		t.Errorf("opening a session for an endpoint nobody answers: %v\nwant Unavailable: %s", err, want)
	}
	if log := c.log.String(); !strings.Contains(log, "relay session refused") || strings.Contains(log, "s3cret") || strings.Contains(log, "gw-user") {
		t.Errorf("hostd's log:\n%s", log)
	}
}

func TestClientKnowsTheCeiling(t *testing.T) {
	if cowork.MaxSessionTTL != netstack.MaxSessionTTL {
		t.Fatalf("cowork.MaxSessionTTL %v, netstack.MaxSessionTTL %v", cowork.MaxSessionTTL, netstack.MaxSessionTTL)
	}
}

// hostd on its way out ends the event streams as done, after their last
// event: a client following the boot reads why it ended, never a broken
// connection.
func TestEventsEndCleanlyWhenHostdStops(t *testing.T) {
	c := newControlTest(t)
	c.d.events.emit(controlwire.PhaseVMStarted, "VM started", nil)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	stream, err := c.api.Events(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if ev, err := stream.Recv(); err != nil || ev.Phase != controlwire.PhaseVMStarted {
		t.Fatalf("the first event: %+v, %v", ev, err)
	}
	c.d.events.emit(controlwire.PhaseStopped, "stopped", nil)
	c.d.stopServing(c.srv)
	if ev, err := stream.Recv(); err != nil || ev.Phase != controlwire.PhaseStopped {
		t.Fatalf("the last event: %+v, %v", ev, err)
	}
	if ev, err := stream.Recv(); !errors.Is(err, io.EOF) {
		t.Fatalf("after the last event: %+v, %v; want the stream's end", ev, err)
	}
	if _, err := c.api.Status(ctx); !errors.Is(err, controlwire.ErrUnavailable) {
		t.Errorf("status once hostd stopped serving: %v", err)
	}
}

// An ask's tool calls reach the stack through the control socket, under
// a session it opened; others are refused, saying why.
func TestToolCallsGoUnderAnOpenSession(t *testing.T) {
	c := newControlTest(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	r, _ := c.open(t, ctx, controlwire.OpenSessionRequest{APIKey: "sk-ant-test"})
	now := time.Now()
	call := controlwire.ToolCall{ID: "toolu_01", Name: "Bash", From: now.Add(-time.Second), To: now}
	if err := c.api.ToolCalls(ctx, controlwire.ToolCallsRequest{Session: r.ID, Calls: []controlwire.ToolCall{call}}); err != nil {
		t.Fatal(err)
	}
	err := c.api.ToolCalls(ctx, controlwire.ToolCallsRequest{Session: "0123456789abcdef", Calls: []controlwire.ToolCall{call}})
	if controlwire.CodeOf(err) != controlwire.CodeInvalidArgument || !strings.Contains(err.Error(), `no relay session "0123456789abcdef" on this instance`) {
		t.Fatalf("tool calls of an unknown session: %v", err)
	}
	many := make([]controlwire.ToolCall, netstack.MaxToolCalls+50)
	for i := range many {
		many[i] = call
	}
	if err := c.api.ToolCalls(ctx, controlwire.ToolCallsRequest{Session: r.ID, Calls: many}); controlwire.CodeOf(err) != controlwire.CodeInvalidArgument || !strings.Contains(err.Error(), "at most 4096") {
		t.Fatalf("too many tool calls: %v", err)
	}
}
