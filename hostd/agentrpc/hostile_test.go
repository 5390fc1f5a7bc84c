package agentrpc

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/coworkhq/cowork/internal/agentcall"
	"github.com/coworkhq/cowork/internal/termsafe"
)

// hostileAgent is a client whose every call reaches script, on the
// agent's end of a pipe, once the preface and request line are read;
// the channel is closed when script returns.
func hostileAgent(t testing.TB, script func(c net.Conn, req agentcall.Request)) *Client {
	c, _ := New(func(ctx context.Context) (net.Conn, error) {
		host, guest := net.Pipe()
		go func() {
			defer guest.Close()
			br := bufio.NewReader(guest)
			head := make([]byte, len(agentcall.Preface))
			var req agentcall.Request
			if _, err := io.ReadFull(br, head); err != nil || string(head) != agentcall.Preface {
				t.Errorf("the host opened a call with %q, %v", head, err)
				return
			}
			if err := agentcall.NewLineReader(br).Read(&req); err != nil {
				t.Errorf("the host's request: %v", err)
				return
			}
			script(guest, req)
		}()
		return host, nil
	})
	return c
}

func says(s string) func(net.Conn, agentcall.Request) {
	return func(c net.Conn, _ agentcall.Request) { io.WriteString(c, s) }
}

// patience bounds every call here: a call that does not end by itself
// within it is a hang, and fails the test instead of blocking it.
const patience = time.Minute

func TestInfoRefusesWhatIsNoAnswer(t *testing.T) {
	endless := func(c net.Conn, _ agentcall.Request) { // a line that never ends
		b := []byte(strings.Repeat("x", 4096))
		for {
			if _, err := c.Write(b); err != nil {
				return
			}
		}
	}
	for name, c := range map[string]struct {
		script   func(net.Conn, agentcall.Request)
		protocol bool   // a *ProtocolError
		word     string // in the error
	}{
		"oversized line":    {says(`{"info":{"hostname":"` + strings.Repeat("h", 100<<10) + `"}}` + "\n"), true, "a line over"},
		"never-ending line": {endless, true, "a line over"},
		"wrong reply":       {says(`{"set_time":{"skew_nano":1}}` + "\n"), true, "without info"},
		"null":              {says("null\n"), true, "without info"},
		"http":              {says("HTTP/1.1 400 Bad Request\r\n\r\n"), true, "not the JSON"},
		"huge number":       {says(`{"info":{"uptime_ms":1e400}}` + "\n"), true, "not the JSON"},
		"overflow":          {says(`{"info":{"uptime_ms":9223372036854775808}}` + "\n"), true, "not the JSON"},
		"wrong type":        {says(`{"info":{"version":7}}` + "\n"), true, "not the JSON"},
		"two values":        {says(`{"info":{}}{"info":{}}` + "\n"), true, "not the JSON"},
		"cut line":          {says(`{"info":{"version":"1`), false, "unexpected EOF"},
		"nothing":           {says(""), false, "EOF"},
	} {
		ctx, cancel := context.WithTimeout(context.Background(), patience)
		info, err := hostileAgent(t, c.script).Info(ctx)
		var perr *ProtocolError
		if ctx.Err() != nil {
			t.Errorf("%s: the call hung", name)
		} else if err == nil || errors.As(err, &perr) != c.protocol || !strings.Contains(err.Error(), c.word) {
			t.Errorf("%s: %+v, %v; want an error saying %q (protocol error: %v)", name, info, err, c.word, c.protocol)
		}
		cancel()
	}
}

// Numbers are taken as sent (guestBootFrom bounds the boot times), and
// nothing the guest sends is refused for being negative or large.
func TestInfoPassesNumbersOn(t *testing.T) {
	c := hostileAgent(t, says(`{"info":{"uptime_ms":-1,"init_started_ms":9223372036854775807,"process":{"goroutines":-2147483648}},"unknown":[1]}`+"\n"))
	info, err := c.Info(context.Background())
	if err != nil || info.UptimeMs != -1 || info.InitStartedMs != 1<<63-1 || info.Process.Goroutines != -1<<31 {
		t.Fatalf("%+v, %v", info, err)
	}
}

// An agent that says nothing, or trickles a line byte by byte, holds a
// call only until the caller's deadline.
func TestCallsEndAtTheDeadline(t *testing.T) {
	silent := func(c net.Conn, _ agentcall.Request) { io.Copy(io.Discard, c) }
	trickle := func(c net.Conn, _ agentcall.Request) {
		for {
			if _, err := c.Write([]byte("{")); err != nil {
				return
			}
			time.Sleep(time.Millisecond)
		}
	}
	for name, script := range map[string]func(net.Conn, agentcall.Request){"silent": silent, "trickle": trickle} {
		for _, method := range []string{"info", "set_time", "shutdown", "provisioning", "share_release", "share_mount"} {
			ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
			c := hostileAgent(t, script)
			var err error
			done := make(chan struct{})
			go func() {
				defer close(done)
				switch method {
				case "info":
					_, err = c.Info(ctx)
				case "set_time":
					_, err = c.SetTime(ctx, time.Now())
				case "shutdown":
					err = c.Shutdown(ctx)
				case "share_release":
					_, err = c.ShareRelease(ctx, "/workspace", true)
				case "share_mount":
					err = c.ShareMount(ctx, "workspace", "/workspace", false)
				case "provisioning":
					var s *ProvisioningStream
					if s, err = c.Provisioning(ctx); err == nil {
						_, err = s.Recv()
					}
				}
			}()
			select {
			case <-done:
				if !errors.Is(err, context.DeadlineExceeded) {
					t.Errorf("%s %s: %v; want the deadline's error", name, method, err)
				}
			case <-time.After(patience):
				t.Fatalf("%s %s: the call outlived its deadline", name, method)
			}
			cancel()
		}
	}
}

// A provisioning call without a deadline of its own ends when the agent
// stays silent for the idle limit (a channel whose far end vanished).
func TestProvisioningSilenceEndsTheStream(t *testing.T) {
	c := hostileAgent(t, func(c net.Conn, _ agentcall.Request) {
		io.WriteString(c, `{"provisioning":{"state":"running"}}`+"\n")
		io.Copy(io.Discard, c)
	})
	c.idle = 100 * time.Millisecond
	ctx, cancel := context.WithTimeout(context.Background(), patience) // fails, not hangs, without the idle limit
	defer cancel()
	s, err := c.Provisioning(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if st, err := s.Recv(); err != nil || st.State != agentcall.StateRunning {
		t.Fatalf("first status %+v, %v", st, err)
	}
	if st, err := s.Recv(); !errors.Is(err, errDeadlineForTest) {
		t.Fatalf("after silence: %+v, %v; want a deadline error", st, err)
	}
}

// A provisioning stream that never ends (thousands of running statuses,
// each as large as a line may be) keeps nothing: the heap stays small
// while far more than it went through, and the caller's context ends it.
func TestProvisioningEndlessStreamIsBounded(t *testing.T) {
	line := []byte(fmt.Sprintf(`{"provisioning":{"state":"running","last_line":"%s"}}`+"\n", strings.Repeat("y", agentcall.MaxLine-100)))
	c := hostileAgent(t, func(c net.Conn, _ agentcall.Request) {
		for {
			if _, err := c.Write(line); err != nil {
				return
			}
		}
	})
	ctx, cancel := context.WithTimeout(context.Background(), patience)
	defer cancel()
	s, err := c.Provisioning(ctx)
	if err != nil {
		t.Fatal(err)
	}
	const n = 3000 // about 200 MB
	var peak uint64
	for i := range n {
		st, err := s.Recv()
		if err != nil || st.State != agentcall.StateRunning {
			t.Fatalf("status %d: %v", i, err)
		}
		if i%500 == 499 {
			runtime.GC()
			var ms runtime.MemStats
			runtime.ReadMemStats(&ms)
			peak = max(peak, ms.HeapAlloc)
		}
	}
	if peak > 32<<20 {
		t.Errorf("heap at %d MiB after %d statuses of %d KiB: something keeps them", peak>>20, n, len(line)>>10)
	}
	cancel()
	if _, err := s.Recv(); !errors.Is(err, context.Canceled) {
		t.Errorf("after the caller's context ended: %v", err)
	}
}

func TestProvisioningRefusesWhatIsNoStatus(t *testing.T) {
	for name, c := range map[string]struct {
		reply, word string
	}{
		"unknown state": {`{"provisioning":{"state":"pwned\u001b[2J"}}`, "unknown state"},
		"no state":      {`{"provisioning":{}}`, "unknown state"},
		"wrong reply":   {`{"info":{}}`, "without provisioning"},
	} {
		s, err := hostileAgent(t, says(c.reply+"\n")).Provisioning(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		st, err := s.Recv()
		var perr *ProtocolError
		if !errors.As(err, &perr) || !strings.Contains(err.Error(), c.word) || !termsafe.Safe(err.Error(), false) {
			t.Errorf("%s: %+v, %v; want a protocol error saying %q", name, st, err, c.word)
		}
	}
}

// The stream ends after the first status that is not running, whatever
// the agent sends after it.
func TestProvisioningEndsAfterTheVerdict(t *testing.T) {
	s, err := hostileAgent(t, says(`{"provisioning":{"state":"failed","last_line":"E: oops"}}`+"\n"+`{"provisioning":{"state":"running"}}`+"\n")).Provisioning(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if st, err := s.Recv(); err != nil || st.State != agentcall.StateFailed || st.LastLine != "E: oops" {
		t.Fatalf("verdict %+v, %v", st, err)
	}
	if st, err := s.Recv(); err != io.EOF {
		t.Fatalf("after the verdict: %+v, %v", st, err)
	}
}

// The agent's refusal reaches the caller as one short printable line.
func TestRefusalsAreBoundedAndPrintable(t *testing.T) {
	c := hostileAgent(t, says(`{"error":"`+"\\u001b]52;c;ZWNobw==\\u0007\\r\\nfake prompt$ "+strings.Repeat("z", 60<<10)+`","kind":"`+strings.Repeat("k", 1000)+`"}`+"\n"))
	err := c.Shutdown(context.Background())
	var re *RefusedError
	if !errors.As(err, &re) || len(err.Error()) > 700 || !termsafe.Safe(err.Error(), false) || strings.ContainsAny(err.Error(), "\x1b\x07\r\n") {
		t.Fatalf("%d bytes: %.200q", len(err.Error()), err)
	}
	if IsUnimplemented(err) {
		t.Error("a refusal of another kind taken for unimplemented")
	}
}
