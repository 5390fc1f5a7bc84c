package kubevirt

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/util/httpstream"
	"k8s.io/client-go/rest"
	k8stesting "k8s.io/client-go/testing"

	"github.com/coworkhq/cowork/hostd/egresslog"
	"github.com/coworkhq/cowork/hostd/egresslog/egresslogtest"
	"github.com/coworkhq/cowork/hostd/machine"
	"github.com/coworkhq/cowork/hostd/netstack/audit"
)

// forwardTo is the API server's pods/portforward, as apimachinery's own
// SPDY side serves it, joining each data stream to target as the kubelet
// joins it to the pod's port; each request's path and port go to seen.
func forwardTo(t *testing.T, target string, seen func(path, port string)) *httptest.Server {
	var path string
	return portForwardServer(t, func(r *http.Request) { path = r.Method + " " + r.URL.Path }, func(s httpstream.Stream) {
		if s.Headers().Get(corev1.StreamType) != corev1.StreamTypeData {
			return
		}
		seen(path, s.Headers().Get(corev1.PortHeader))
		go func() {
			c, err := net.Dial("tcp", target)
			if err != nil {
				s.Reset()
				return
			}
			go func() { io.Copy(c, s); c.Close() }()
			io.Copy(s, c)
			s.Close()
		}()
	})
}

// The log is read from the ready egress pod's log port, through the API
// server's port-forward (SPDY, as a real API server speaks it): the
// records since the time asked for, then, following, the ones written
// after, until the caller's context ends.
func TestEgressLogReadsThePodsLogPort(t *testing.T) {
	addr, al := egresslogtest.Start(t)
	now := time.Now()
	for _, r := range []*audit.Record{
		{Time: now.Add(-2 * time.Hour), Kind: audit.KindTCP, Verdict: audit.Allow, Name: "old.example", Client: "10.244.1.7:40000"},
		{Time: now.Add(-time.Minute), Kind: audit.KindHTTP, Verdict: audit.Deny, Name: "recent.example", Client: "10.244.1.7:40001"},
	} {
		if err := al.Write(r); err != nil {
			t.Fatal(err)
		}
	}
	var mu sync.Mutex
	var forwards []string
	srv := forwardTo(t, addr, func(path, port string) {
		mu.Lock()
		forwards = append(forwards, path+" port "+port)
		mu.Unlock()
	})
	c := newCluster(t, "sandboxes", egressPodObject("cowork-egress-old", false), egressPodObject("cowork-egress-7d9f", true))
	b := Backend{Client: c.client, Forward: APIPortForwarder(&rest.Config{Host: srv.URL})}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	var got []string
	skipped, err := b.EgressLog(ctx, "sandboxes", egresslog.Request{Since: now.Add(-10 * time.Minute).Format(time.RFC3339)}, func(rec []byte) error {
		r, err := audit.ParseLine(rec)
		if err != nil {
			return err
		}
		got = append(got, r.Name+" from "+r.Client)
		return nil
	})
	if err != nil || skipped != 0 || strings.Join(got, ",") != "recent.example from 10.244.1.7:40001" {
		t.Fatalf("the log since 10 minutes ago: %q, %d skipped, %v", got, skipped, err)
	}
	mu.Lock()
	if len(forwards) != 1 || forwards[0] != "POST /api/v1/namespaces/sandboxes/pods/cowork-egress-7d9f/portforward port 7893" {
		t.Errorf("forwarded to %q, want the ready pod's log port", forwards)
	}
	mu.Unlock()

	fctx, fcancel := context.WithCancel(ctx)
	names := make(chan string, 16)
	done := make(chan error, 1)
	go func() {
		_, err := b.EgressLog(fctx, "sandboxes", egresslog.Request{Follow: true}, func(rec []byte) error {
			r, err := audit.ParseLine(rec)
			if err == nil {
				names <- r.Name
			}
			return err
		})
		done <- err
	}()
	for _, want := range []string{"old.example", "recent.example"} {
		if n := <-names; n != want {
			t.Fatalf("following: %q, want %q", n, want)
		}
	}
	al.Write(&audit.Record{Kind: audit.KindTCP, Verdict: audit.Allow, Name: "late.example"})
	select {
	case n := <-names:
		if n != "late.example" {
			t.Errorf("a record written while followed: %q", n)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("a record written while followed never came")
	}
	fcancel()
	select {
	case err := <-done:
		if !errors.Is(err, context.Canceled) {
			t.Errorf("a follow whose context ended: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Error("a follow did not end with its context")
	}
}

// Each way the log cannot be read is one line that says what to do.
func TestEgressLogSaysWhatToFix(t *testing.T) {
	ready := egressPodObject("cowork-egress-7d9f", true)
	forbidden := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusForbidden)
		io.WriteString(w, `{"kind":"Status","apiVersion":"v1","metadata":{},"status":"Failure","message":"pods \"cowork-egress-7d9f\" is forbidden: User \"dev\" cannot create resource \"pods/portforward\" in API group \"\" in the namespace \"sandboxes\"","reason":"Forbidden","code":403}`)
	}))
	defer forbidden.Close()
	var errStream httpstream.Stream
	oldImage := portForwardServer(t, nil, func(s httpstream.Stream) {
		if s.Headers().Get(corev1.StreamType) == corev1.StreamTypeError {
			errStream = s
			return
		}
		io.WriteString(errStream, "error forwarding port 7893 to pod 1234, uid : failed to execute portforward in network namespace: dial tcp4 127.0.0.1:7893: connect: connection refused")
		errStream.Close()
		s.Close()
	})
	for _, c := range []struct {
		name   string
		objs   []runtime.Object
		host   string
		forbid bool
		want   []string
	}{
		{"no egress pod", []runtime.Object{egressPodObject("cowork-egress-old", false)}, oldImage.URL, false,
			[]string{"namespace sandboxes has no egress proxy pod running and ready", "kubectl -n sandboxes get pods"}},
		{"pods not listed", []runtime.Object{ready}, oldImage.URL, true,
			[]string{"needs `list` on pods and `create` on pods/portforward in namespace sandboxes"}},
		{"no port-forward", []runtime.Object{ready}, forbidden.URL, false,
			[]string{"log port (7893 of pod sandboxes/cowork-egress-7d9f", "cannot create resource \"pods/portforward\"", "needs `list` on pods and `create` on pods/portforward"}},
		{"an egress image without the log port", []runtime.Object{ready}, oldImage.URL, false,
			[]string{"answered nothing", "connect: connection refused", "cowork-hostd-kubevirt egress --namespace sandboxes --image IMAGE | kubectl apply -f -"}},
	} {
		t.Run(c.name, func(t *testing.T) {
			cl := newCluster(t, "sandboxes", c.objs...)
			if c.forbid {
				cl.client.PrependReactor("list", "pods", func(k8stesting.Action) (bool, runtime.Object, error) {
					return true, nil, apierrors.NewForbidden(schema.GroupResource{Resource: "pods"}, "", errors.New(`User "dev" cannot list resource "pods"`))
				})
			}
			b := Backend{Client: cl.client, Forward: APIPortForwarder(&rest.Config{Host: c.host})}
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			_, err := b.EgressLog(ctx, "sandboxes", egresslog.Request{}, func([]byte) error {
				t.Error("a record")
				return nil
			})
			if err == nil || strings.Contains(err.Error(), "\n") {
				t.Fatalf("%v; want one line", err)
			}
			for _, w := range c.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("%v\nwant it to say %q", err, w)
				}
			}
		})
	}
}

// No sandbox runs where the log port is open to the pod network: a
// sandboxes' policy or a proxy Service that reaches it is not cowork's.
func TestTheWallKeepsTheLogPortClosed(t *testing.T) {
	objs := deployedEgress(t, "sandboxes", ours)
	svc, pol := objs[0], objs[1]
	for _, c := range []struct {
		name string
		objs []runtime.Object
		want string
	}{
		{"a policy opening the log port of the proxy's pod", []runtime.Object{svc, edited(t, pol, func(u map[string]any) {
			rule := u["spec"].(map[string]any)["egress"].([]any)[0].(map[string]any)
			rule["ports"] = append(rule["ports"].([]any), map[string]any{"protocol": "TCP", "port": int64(LogPort)})
		})}, "is not the one this cowork makes"},
		{"a proxy Service with the log port", []runtime.Object{edited(t, svc, func(u map[string]any) {
			spec := u["spec"].(map[string]any)
			spec["ports"] = append(spec["ports"].([]any), map[string]any{"name": "log", "port": int64(LogPort), "targetPort": int64(LogPort), "protocol": "TCP"})
		}), pol}, "does not lead to cowork's proxy"},
	} {
		t.Run(c.name, func(t *testing.T) {
			cfg := kubeInstance(t, "box", "sandboxes")
			cl := newCluster(t, "sandboxes", c.objs...)
			newMachine, err := Backend{Client: cl.client, Dial: SubresourceDialer(&rest.Config{Host: "http://127.0.0.1:1"})}.NewMachine(cfg)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := newMachine(machine.Config{}, nil); err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("made a machine: %v; want an error saying %q", err, c.want)
			}
		})
	}
}
