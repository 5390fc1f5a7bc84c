package main

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/coworkhq/cowork/hostd/controlwire"
	"github.com/coworkhq/cowork/hostd/netstack"
	"github.com/coworkhq/cowork/hostd/netstack/audit"
	"github.com/coworkhq/cowork/internal/hostdwire"
	"github.com/coworkhq/cowork/internal/syncbuf"
)

const testKey = "sk-ant-the-real-key-0123456789"

// The sessions port takes a loopback address only: on any other, the
// guests on the pod network could open sessions with the namespace's key.
// The relay and its sessions come together.
func TestEgressSessionsListenOnLoopbackOnly(t *testing.T) {
	auditDir := filepath.Join(t.TempDir(), "audit")
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"--relay-listen", ":0", "--sessions-listen", ":7892"}, "loopback"},
		{[]string{"--relay-listen", ":0", "--sessions-listen", "0.0.0.0:7892"}, "loopback"},
		{[]string{"--relay-listen", ":0", "--sessions-listen", "[::]:7892"}, "loopback"},
		{[]string{"--relay-listen", ":0", "--sessions-listen", "10.1.2.3:7892"}, "loopback"},
		{[]string{"--relay-listen", ":0", "--sessions-listen", "localhost:7892"}, "loopback"},
		{[]string{"--relay-listen", ":0", "--sessions-listen", "127.0.0.1"}, "loopback"},
		{[]string{"--relay-listen", ":0"}, "go together"},
		{[]string{"--sessions-listen", "127.0.0.1:0"}, "go together"},
	} {
		var stderr bytes.Buffer
		args := append([]string{"egress", "--listen", "127.0.0.1:0", "--audit", auditDir}, c.args...)
		// Bounded: an egress that took the address would serve.
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		code := Main(ctx, args, io.Discard, &stderr)
		cancel()
		if code != hostdwire.ExitUsage || !strings.Contains(stderr.String(), c.want) || strings.Count(strings.TrimSpace(stderr.String()), "\n") != 0 {
			t.Errorf("egress %q: exit %d, stderr %q; want exit %d and one line naming %q", c.args, code, stderr.String(), hostdwire.ExitUsage, c.want)
		}
	}
}

// egressRelay runs `cowork-hostd egress` with its relay, the key in a
// file (none: no file) and api as its endpoint; it returns the relay's address, a client
// of its sessions port, the audit log's path and egress's stderr.
func egressRelay(t *testing.T, api, key string) (relay string, sessions *controlwire.Client, log string, stderr *syncbuf.Buffer) {
	t.Helper()
	dir := t.TempDir()
	keyFile := filepath.Join(dir, "api-key")
	if key != "" {
		if err := os.WriteFile(keyFile, []byte(key+"\n"), 0o400); err != nil {
			t.Fatal(err)
		}
	}
	auditDir := filepath.Join(dir, "audit")
	ctx, cancel := context.WithCancel(context.Background())
	stderr = &syncbuf.Buffer{}
	done := make(chan int, 1)
	go func() {
		done <- Main(ctx, []string{"egress", "--listen", "127.0.0.1:0", "--audit", auditDir,
			"--relay-listen", "127.0.0.1:0", "--sessions-listen", "127.0.0.1:0",
			"--api-key-file", keyFile, "--api-endpoint", api}, io.Discard, stderr)
	}()
	t.Cleanup(func() {
		cancel()
		select {
		case code := <-done:
			if code != 0 {
				t.Errorf("egress ended with %d: %s", code, stderr)
			}
		case <-time.After(15 * time.Second):
			t.Error("egress did not stop")
		}
	})
	re := regexp.MustCompile(`egress relay serving" addr=(\S+) sessions=(\S+)`)
	var sess string
	for deadline := time.Now().Add(10 * time.Second); relay == ""; time.Sleep(10 * time.Millisecond) {
		if m := re.FindStringSubmatch(stderr.String()); m != nil {
			relay, sess = m[1], m[2]
		}
		if time.Now().After(deadline) {
			t.Fatalf("egress did not say where its relay serves: %s", stderr)
		}
	}
	var d net.Dialer
	sessions = controlwire.NewClientDial(sess, func(ctx context.Context) (net.Conn, error) { return d.DialContext(ctx, "tcp", sess) })
	t.Cleanup(func() { sessions.Close() })
	return relay, sessions, filepath.Join(auditDir, "network.jsonl"), stderr
}

// fakeAPI answers GET /v1/models with the key it was sent.
func fakeAPI(t *testing.T) (*httptest.Server, chan string) {
	keys := make(chan string, 16)
	api := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case keys <- r.Header.Get("x-api-key"):
		default:
		}
		w.Header().Set("Content-Type", "application/json")
		io.WriteString(w, `{"data": []}`)
	}))
	t.Cleanup(api.Close)
	return api, keys
}

func guestGet(t *testing.T, relay, placeholder string) (int, string) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, "http://"+relay+"/v1/models", nil)
	if placeholder != "" {
		req.Header.Set("x-api-key", placeholder)
	}
	resp, err := (&http.Client{Timeout: 10 * time.Second}).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// The egress pod's relay: a guest (a plain HTTP client on the pod
// network) gets nothing without a session's placeholder, nor with a
// wrong one, and each refusal is audited under its address; a session
// opened on the sessions port, carrying no key, lets the placeholder
// through to the endpoint with the key of the file, which appears in
// nothing the caller or the guest gets, nor in the audit log or the
// proxy's log; once the session closes, the placeholder is refused.
func TestEgressRelaysWithTheKeyOfItsFile(t *testing.T) {
	api, keys := fakeAPI(t)
	relay, sessions, log, stderr := egressRelay(t, api.URL, testKey)
	ctx := context.Background()

	if code, body := guestGet(t, relay, ""); code != http.StatusUnauthorized || strings.Contains(body, testKey) {
		t.Errorf("no placeholder: %d %s", code, body)
	}
	if code, _ := guestGet(t, relay, "cowork-session-0123456789abcdef0123456789abcdef0123456789abcdef"); code != http.StatusUnauthorized {
		t.Errorf("a wrong placeholder: %d", code)
	}
	// A request that carries a key is refused: the key stays in the pod.
	for _, req := range []controlwire.OpenSessionRequest{{APIKey: "sk-attacker"}, {AuthToken: "tok"}} {
		s, err := sessions.OpenSession(ctx, req)
		if err == nil {
			_, err = s.Recv()
			s.Close()
		}
		if err == nil || !strings.Contains(err.Error(), "carries no credential") {
			t.Errorf("a session request with %v: %v, want it refused", req, err)
		}
	}
	// Nor may it send the key elsewhere.
	s, err := sessions.OpenSession(ctx, controlwire.OpenSessionRequest{Endpoint: "https://attacker.example"})
	if err == nil {
		_, err = s.Recv()
		s.Close()
	}
	if err == nil || !strings.Contains(err.Error(), "sends its key to") {
		t.Errorf("a session to another endpoint: %v, want it refused", err)
	}
	// Nothing but sessions on that port.
	if _, err := sessions.Status(ctx); err == nil || !strings.Contains(err.Error(), "answers open_session and close_session only") {
		t.Errorf("the sessions port answered status: %v", err)
	}

	stream, err := sessions.OpenSession(ctx, controlwire.OpenSessionRequest{What: "ask"})
	if err != nil {
		t.Fatal(err)
	}
	sess, err := stream.Recv()
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(sess.Placeholder, "cowork-session-") || strings.Contains(sess.Placeholder+sess.BaseURL+sess.ID, testKey) {
		t.Fatalf("the session %+v", sess)
	}
	// With a session live, neither no placeholder nor another gets in.
	if code, _ := guestGet(t, relay, ""); code != http.StatusUnauthorized {
		t.Errorf("no placeholder, with a session live: %d", code)
	}
	if code, _ := guestGet(t, relay, sess.Placeholder[:len(sess.Placeholder)-1]+"x"); code != http.StatusUnauthorized {
		t.Errorf("a wrong placeholder, with a session live: %d", code)
	}
	code, body := guestGet(t, relay, sess.Placeholder)
	if code != http.StatusOK || strings.Contains(body, testKey) {
		t.Fatalf("with the placeholder: %d %s", code, body)
	}
	if got := <-keys; got != testKey {
		t.Errorf("the endpoint got the key %q, want the file's", got)
	}
	u, err := sessions.CloseSession(ctx, sess.ID)
	if err != nil || u == nil || u.Requests != 0 {
		// /v1/models is not metered: no Messages API request counted.
		t.Errorf("close: %+v, %v", u, err)
	}
	if _, err := stream.Recv(); err != nil && !errors.Is(err, io.EOF) {
		t.Errorf("the session's stream after close: %v", err)
	}
	stream.Close()
	if code, _ := guestGet(t, relay, sess.Placeholder); code != http.StatusUnauthorized {
		t.Errorf("the placeholder of a closed session: %d", code)
	}
	// A session whose stream closes (the daemon's port-forward ends) ends.
	stream, err = sessions.OpenSession(ctx, controlwire.OpenSessionRequest{})
	if err != nil {
		t.Fatal(err)
	}
	sess2, err := stream.Recv()
	if err != nil {
		t.Fatal(err)
	}
	if code, _ := guestGet(t, relay, sess2.Placeholder); code != http.StatusOK {
		t.Errorf("second session: %d", code)
	}
	<-keys
	stream.Close()
	deadline := time.Now().Add(5 * time.Second)
	for code, _ := guestGet(t, relay, sess2.Placeholder); code != http.StatusUnauthorized; code, _ = guestGet(t, relay, sess2.Placeholder) {
		if time.Now().After(deadline) {
			t.Fatalf("the placeholder of a session whose stream closed: %d", code)
		}
		time.Sleep(20 * time.Millisecond)
	}

	want := map[string]bool{string(netstack.NoCredential): false, string(netstack.Unknown): false, string(netstack.Ended): false}
	var allowed int
	for end := time.Now().Add(10 * time.Second); time.Now().Before(end); time.Sleep(20 * time.Millisecond) {
		allowed = 0
		audit.Stream(ctx, log, time.Time{}, false, func(r *audit.Record) error {
			if r.Kind != audit.KindRelay || !strings.HasPrefix(r.Client, "127.0.0.1:") {
				return nil
			}
			if r.Verdict == audit.Deny {
				if _, ok := want[r.Rule]; ok {
					want[r.Rule] = true
				}
			} else {
				allowed++
			}
			return nil
		})
		if want[string(netstack.NoCredential)] && want[string(netstack.Unknown)] && want[string(netstack.Ended)] && allowed >= 2 {
			break
		}
	}
	for rule, seen := range want {
		if !seen {
			b, _ := os.ReadFile(log)
			t.Errorf("no audit record of a refusal for %q under the client's address:\n%s", rule, b)
		}
	}
	if b, _ := os.ReadFile(log); strings.Contains(string(b), testKey) || allowed < 2 {
		t.Errorf("the audit log holds the key, or lacks the relayed requests (%d):\n%s", allowed, b)
	}
	if strings.Contains(stderr.String(), testKey) {
		t.Errorf("the proxy's log holds the key: %s", stderr)
	}
}

// Without a key in its pod, a session is refused naming the Secret to
// make.
func TestEgressWithoutAKeySaysWhichSecret(t *testing.T) {
	api, _ := fakeAPI(t)
	_, sessions, _, _ := egressRelay(t, api.URL, "")
	s, err := sessions.OpenSession(context.Background(), controlwire.OpenSessionRequest{})
	if err == nil {
		_, err = s.Recv()
		s.Close()
	}
	if err == nil || !strings.Contains(err.Error(), "kubectl create secret generic cowork-api-key --from-literal=api-key=") {
		t.Errorf("a session without a key: %v", err)
	}
}
