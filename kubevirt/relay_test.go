package kubevirt

import (
	"context"
	"encoding/base64"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/rest"

	"github.com/coworkhq/cowork"
	"github.com/coworkhq/cowork/hostd/controlwire"
	"github.com/coworkhq/cowork/hostd/egressrelay"
	"github.com/coworkhq/cowork/hostd/netstack"
	"github.com/coworkhq/cowork/hostd/netstack/audit"
	"github.com/coworkhq/cowork/internal/syncbuf"
)

const clusterKey = "sk-ant-cluster-secret-key-9876543210"

// egressPodObject is the egress proxy's pod as the API server keeps it.
func egressPodObject(name string, ready bool) runtime.Object {
	labels := map[string]any{}
	for k, v := range egressLabels() {
		labels[k] = v
	}
	status := "False"
	if ready {
		status = "True"
	}
	return &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": "v1", "kind": "Pod",
		"metadata": map[string]any{"name": name, "namespace": "sandboxes", "labels": labels},
		"status": map[string]any{"phase": "Running", "conditions": []any{
			map[string]any{"type": "Ready", "status": status},
		}},
	}}
}

// inProcessEgress is the egress pod's relay and sessions server, as
// `cowork-hostd egress --relay-listen --sessions-listen --api-key-file`
// runs them, here on local listeners, with the key in a file and api as
// its endpoint.
type inProcessEgress struct {
	relay, sessions string
	log             string
}

func startEgress(t *testing.T, api string) inProcessEgress {
	t.Helper()
	dir := t.TempDir()
	keyFile := filepath.Join(dir, "api-key")
	os.WriteFile(keyFile, []byte(clusterKey+"\n"), 0o400)
	al, err := audit.Open(filepath.Join(dir, "network.jsonl"), audit.Options{Key: filepath.Join(dir, "audit.key"), Head: filepath.Join(dir, "audit.head")})
	if err != nil {
		t.Fatal(err)
	}
	var logs syncbuf.Buffer
	log := slog.New(slog.NewTextHandler(&logs, nil))
	n, err := netstack.New(netstack.Config{GuestMAC: netstack.GuestMAC("egress"), Audit: al, Log: log})
	if err != nil {
		t.Fatal(err)
	}
	rl, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	sl, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); n.ServeRelayOn(ctx, rl) }()
	go func() {
		defer wg.Done()
		egressrelay.Serve(ctx, sl, &egressrelay.Sessions{Stack: n, KeyFile: keyFile, Endpoint: api, Closing: ctx.Done(), Log: log})
	}()
	t.Cleanup(func() {
		cancel()
		ended := make(chan struct{})
		go func() { wg.Wait(); close(ended) }()
		select {
		case <-ended:
		case <-time.After(20 * time.Second):
			t.Error("the egress relay did not end")
		}
		n.Close()
		al.Close()
		if strings.Contains(logs.String(), clusterKey) {
			t.Errorf("the egress pod's log holds the key:\n%s", logs.String())
		}
	})
	return inProcessEgress{relay: rl.Addr().String(), sessions: sl.Addr().String(), log: filepath.Join(dir, "network.jsonl")}
}

// `cowork ask` on a cluster, end to end but for the cluster: hostd (the
// kubevirt daemon, its Machine on the fake API server) opens the session
// on the egress pod's sessions port through the "port-forward" (here a
// local dial, of the pod that runs and is ready), with no key; the guest
// gets the relay's URL on the Service's cluster IP and a placeholder,
// which the relay swaps for the key of the pod's file on the way to the
// Messages API; a session asked for with a key is refused by hostd; the
// key appears in nothing hostd or the CLI gets, nor in the audit log;
// once the CLI closes the session, the placeholder is refused.
func TestAskOnTheClusterUsesTheEgressRelay(t *testing.T) {
	keys := make(chan string, 16)
	api := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case keys <- r.Header.Get("x-api-key"):
		default:
		}
		w.Header().Set("Content-Type", "application/json")
		io.WriteString(w, `{"data": []}`)
	}))
	defer api.Close()
	eg := startEgress(t, api.URL)

	cfg := kubeInstance(t, "box", "sandboxes")
	objs := append(deployedEgress(t, "sandboxes", ours), egressPodObject("cowork-egress-old", false), egressPodObject("cowork-egress-7d9f", true))
	c := newCluster(t, "sandboxes", objs...)
	vs := provisionedGuest(t, "")
	var mu sync.Mutex
	var forwarded []string
	forward := func(ctx context.Context, ns, pod string, port int) (net.Conn, error) {
		mu.Lock()
		forwarded = append(forwarded, ns+"/"+pod)
		mu.Unlock()
		if ns != "sandboxes" || pod != "cowork-egress-7d9f" || port != SessionsPort {
			return nil, errors.New("port-forward to the wrong pod or port")
		}
		var d net.Dialer
		return d.DialContext(ctx, "tcp", eg.sessions)
	}
	b := Backend{Client: c.client, Dial: SubresourceDialer(&rest.Config{Host: vs.URL}), Forward: forward, Poll: 5 * time.Millisecond}
	newMachine, err := b.NewMachine(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	client, logs, done := startHostd(ctx, t, newMachine)
	defer func() {
		cancel()
		select {
		case <-done:
		case <-time.After(20 * time.Second):
			t.Error("hostd did not end")
		}
	}()

	// The guest's claude reaches the relay directly, not through the
	// proxy (which takes public addresses only).
	sec, err := c.client.Resource(secretResource).Namespace("sandboxes").Get(ctx, "cowork-box-cloudinit", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	ud, _, _ := unstructured.NestedString(sec.Object, "data", "userdata")
	if raw, _ := base64.StdEncoding.DecodeString(ud); !strings.Contains(string(raw), "no_proxy=localhost,127.0.0.1,::1,10.96.7.8 ") {
		t.Errorf("the guest's NO_PROXY does not name the relay's address:\n%s", raw)
	}
	// The CLI sends no key to a cluster's hostd; one that did is refused
	// there, the key sent nowhere.
	if s, err := client.OpenSessionWith(ctx, "", "sk-from-the-laptop", "", cowork.SessionOptions{What: "ask"}); err == nil || !strings.Contains(err.Error(), "carries no credential") {
		if s != nil {
			s.Close()
		}
		t.Errorf("hostd took a key for a session on the cluster: %v", err)
	}
	mu.Lock()
	if len(forwarded) != 0 {
		t.Errorf("a session request with a key went on to the cluster: %v", forwarded)
	}
	mu.Unlock()
	sess, err := client.OpenSessionWith(ctx, "", "", "", cowork.SessionOptions{What: "ask"})
	if err != nil {
		t.Fatalf("open a session: %v\nhostd's log:\n%s", err, logs.String())
	}
	if sess.BaseURL != "http://10.96.7.8:7891" || !strings.HasPrefix(sess.Placeholder, "cowork-session-") {
		t.Errorf("the session %+v: want the relay on the egress Service's cluster IP, and a placeholder", sess)
	}
	if strings.Contains(sess.Placeholder+sess.BaseURL+sess.ID, clusterKey) {
		t.Error("the session holds the key")
	}
	guest := func(placeholder string) int {
		req, _ := http.NewRequest(http.MethodGet, "http://"+eg.relay+"/v1/models", nil)
		req.Header.Set("x-api-key", placeholder)
		resp, err := (&http.Client{Timeout: 10 * time.Second}).Do(req)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if strings.Contains(string(b), clusterKey) {
			t.Error("the guest was answered the key")
		}
		return resp.StatusCode
	}
	if code := guest(sess.Placeholder); code != http.StatusOK {
		t.Fatalf("the guest's request with its placeholder: %d", code)
	}
	if got := <-keys; got != clusterKey {
		t.Errorf("the Messages API got the key %q, want the Secret's", got)
	}
	if code := guest("cowork-session-not-this-one"); code != http.StatusUnauthorized {
		t.Errorf("a wrong placeholder: %d", code)
	}
	if err := sess.Close(); err != nil {
		t.Errorf("close: %v", err)
	}
	if code := guest(sess.Placeholder); code != http.StatusUnauthorized {
		t.Errorf("the placeholder of a closed session: %d", code)
	}
	// A session whose CLI goes away (its call's stream ends) ends too.
	sctx, scancel := context.WithCancel(ctx)
	sess2, err := client.OpenSessionWith(sctx, "", "", "", cowork.SessionOptions{What: "claude"})
	if err != nil {
		t.Fatal(err)
	}
	if code := guest(sess2.Placeholder); code != http.StatusOK {
		t.Errorf("second session: %d", code)
	}
	<-keys
	scancel()
	client.Close()
	for deadline := time.Now().Add(10 * time.Second); guest(sess2.Placeholder) != http.StatusUnauthorized; time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("the session outlived its CLI")
		}
	}
	mu.Lock()
	if len(forwarded) == 0 {
		t.Error("no port-forward was opened")
	}
	mu.Unlock()
	if strings.Contains(logs.String(), clusterKey) {
		t.Errorf("hostd's log holds the key")
	}
	if b, _ := os.ReadFile(eg.log); strings.Contains(string(b), clusterKey) || !strings.Contains(string(b), "relay session") {
		t.Errorf("the egress audit log holds the key, or no relayed request:\n%s", b)
	}
}

// A sessions port that hangs up (a pod without it, a forward the kubelet
// ended) is said to be the egress pod's, with where its log is.
func TestAFailedSessionSaysWhereToLook(t *testing.T) {
	c := newCluster(t, "sandboxes", egressPodObject("cowork-egress-7d9f", true))
	forward := func(ctx context.Context, ns, pod string, port int) (net.Conn, error) {
		here, there := net.Pipe()
		there.Close()
		return here, nil
	}
	m := &Machine{relay: &relay{b: Backend{Client: c.client, Forward: forward}, ns: "sandboxes", baseURL: "http://10.96.7.8:7891"}}
	_, _, err := m.OpenSession(context.Background(), controlwire.OpenSessionRequest{})
	if err == nil || !strings.Contains(err.Error(), "the egress proxy's sessions port (7892 of pod sandboxes/cowork-egress-7d9f") ||
		!strings.Contains(err.Error(), "`kubectl -n sandboxes logs cowork-egress-7d9f`") || strings.Contains(err.Error(), "hostd") {
		t.Errorf("a session on a port that hangs up: %v", err)
	}
}
