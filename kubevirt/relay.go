package kubevirt

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"path"
	"strconv"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/util/httpstream"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/transport/spdy"

	"github.com/coworkhq/cowork/hostd"
	"github.com/coworkhq/cowork/hostd/controlwire"
	"github.com/coworkhq/cowork/internal/termsafe"
)

// The credential relay of a cluster's guests is in the namespace's
// egress pod, with the API key of a Secret mounted there alone
// (Egress). The daemon opens each `ask` or `claude` session on the pod's
// sessions port, on its loopback, through the API server's
// pods/portforward: the request carries no key, and the session lives as
// long as that stream, which lives as long as the CLI's call to hostd.

var podResource = schema.GroupVersionResource{Version: "v1", Resource: "pods"}

// PortForwarder opens a stream to a TCP port of a pod; APIPortForwarder
// goes through the API server, tests to a local listener.
type PortForwarder func(ctx context.Context, namespace, pod string, port int) (net.Conn, error)

// APIPortForwarder reaches a pod's port through the API server's
// pods/portforward subresource (SPDY, as kubectl port-forward does),
// without listening on this machine: each stream is one net.Conn. The
// caller needs the `create` verb on pods/portforward in the namespace.
func APIPortForwarder(cfg *rest.Config) PortForwarder {
	return func(ctx context.Context, namespace, pod string, port int) (net.Conn, error) {
		transport, upgrader, err := spdy.RoundTripperFor(cfg)
		if err != nil {
			return nil, err
		}
		u, _, err := rest.DefaultServerUrlFor(cfg)
		if err != nil {
			return nil, err
		}
		u.Path = path.Join(u.Path, "api/v1/namespaces", namespace, "pods", pod, "portforward")
		dialer := spdy.NewDialer(upgrader, &http.Client{Transport: transport}, http.MethodPost, u)
		type result struct {
			c   net.Conn
			err error
		}
		got := make(chan result, 1)
		go func() {
			c, err := forwardStream(dialer, port)
			got <- result{c, err}
		}()
		select {
		case r := <-got:
			if r.err != nil {
				return nil, fmt.Errorf("through the API server: %w", r.err)
			}
			return r.c, nil
		case <-ctx.Done():
			go func() {
				if r := <-got; r.err == nil {
					r.c.Close()
				}
			}()
			return nil, context.Cause(ctx)
		}
	}
}

// portForwardProtocol is client-go's portforward.PortForwardProtocolV1Name
// (that package brings a local listener and dependencies this does not
// need).
const portForwardProtocol = "portforward.k8s.io"

// forwardStream dials the port-forward connection and opens its error
// and data streams for port, as kubectl's port-forward does.
func forwardStream(dialer httpstream.Dialer, port int) (net.Conn, error) {
	conn, _, err := dialer.Dial(portForwardProtocol)
	if err != nil {
		return nil, err
	}
	h := http.Header{}
	h.Set(corev1.StreamType, corev1.StreamTypeError)
	h.Set(corev1.PortHeader, strconv.Itoa(port))
	h.Set(corev1.PortForwardRequestIDHeader, "0")
	errStream, err := conn.CreateStream(h)
	if err != nil {
		conn.Close()
		return nil, err
	}
	errStream.Close() // this side writes nothing to it
	h.Set(corev1.StreamType, corev1.StreamTypeData)
	data, err := conn.CreateStream(h)
	if err != nil {
		conn.Close()
		return nil, err
	}
	c := &forwardConn{Stream: data, conn: conn, why: make(chan string, 1)}
	// The kubelet says there why it could not reach the port (refused,
	// or no socat on the node), and the data stream just ends.
	go func() {
		b, _ := io.ReadAll(io.LimitReader(errStream, maxForwardError))
		_, _ = io.Copy(io.Discard, errStream) // the rest, unread, must not hold the connection
		c.why <- strings.TrimSpace(string(b))
	}()
	return c, nil
}

// maxForwardError bounds what is read of a port-forward's error stream.
const maxForwardError = 4 << 10

// forwardConn is a port-forward's data stream as a net.Conn; closing it
// closes its connection to the API server.
type forwardConn struct {
	httpstream.Stream
	conn httpstream.Connection
	why  chan string // the error stream's message, once it ends
}

// Read is the data stream's; when it ends, the error stream's message,
// if the kubelet wrote one, is the error.
func (c *forwardConn) Read(p []byte) (int, error) {
	n, err := c.Stream.Read(p)
	if err == nil {
		return n, nil
	}
	select {
	case why := <-c.why:
		c.why <- why // for a later Read
		if why != "" {
			return n, fmt.Errorf("the port-forward ended: %s", termsafe.Line(why))
		}
	case <-time.After(100 * time.Millisecond): // it ends with the data stream, or not at all
	}
	return n, err
}

func (c *forwardConn) Close() error {
	c.Stream.Reset()
	return c.conn.Close()
}

type forwardAddr struct{}

func (forwardAddr) Network() string { return "portforward" }
func (forwardAddr) String() string  { return "portforward" }

func (c *forwardConn) LocalAddr() net.Addr                { return forwardAddr{} }
func (c *forwardConn) RemoteAddr() net.Addr               { return forwardAddr{} }
func (c *forwardConn) SetDeadline(t time.Time) error      { return nil }
func (c *forwardConn) SetReadDeadline(t time.Time) error  { return nil }
func (c *forwardConn) SetWriteDeadline(t time.Time) error { return nil }

// relay is where a Machine opens its guest's sessions: the egress pod of
// its namespace, and the relay's URL the guest reaches.
type relay struct {
	b       Backend
	ns      string
	baseURL string
}

var _ hostd.SessionOpener = (*Machine)(nil)

// egressPod is the name of the namespace's egress pod that runs and is
// ready.
func (r *relay) egressPod(ctx context.Context) (string, error) {
	list, err := r.b.Client.Resource(podResource).Namespace(r.ns).List(ctx, metav1.ListOptions{LabelSelector: labels.SelectorFromSet(egressLabels()).String()})
	if err != nil {
		return "", fmt.Errorf("list the egress proxy's pods in %s: %w", r.ns, err)
	}
	for _, u := range list.Items {
		var p corev1.Pod
		if err := runtime.DefaultUnstructuredConverter.FromUnstructured(u.Object, &p); err != nil || p.DeletionTimestamp != nil || p.Status.Phase != corev1.PodRunning {
			continue
		}
		for _, c := range p.Status.Conditions {
			if c.Type == corev1.PodReady && c.Status == corev1.ConditionTrue {
				return p.Name, nil
			}
		}
	}
	return "", fmt.Errorf("namespace %s has no egress proxy pod running and ready; see `kubectl -n %s get pods -l %s=%s`", r.ns, r.ns, LabelComponent, egressComponent)
}

// sessions is a client of the egress pod's sessions port, and a hint
// that says where to look when a call to it fails.
func (r *relay) sessions(ctx context.Context) (*controlwire.Client, func(error) error, error) {
	if r.b.Forward == nil {
		return nil, nil, errors.New("this daemon cannot reach the cluster's pods (no port-forward)")
	}
	pod, err := r.egressPod(ctx)
	if err != nil {
		return nil, nil, err
	}
	what := fmt.Sprintf("the egress proxy's sessions port (%d of pod %s/%s, port-forward)", SessionsPort, r.ns, pod)
	hint := func(err error) error {
		var ce *controlwire.Error
		if err == nil || (errors.As(err, &ce) && ce.Code != controlwire.CodeUnavailable) {
			return err // the relay's own answer, which says what to do
		}
		return controlwire.Errorf(controlwire.CodeUnavailable, "%v; the pod's log is `kubectl -n %s logs %s`", err, r.ns, pod)
	}
	return controlwire.NewClientDial(what, func(ctx context.Context) (net.Conn, error) {
		return r.b.Forward(ctx, r.ns, pod, SessionsPort)
	}), hint, nil
}

// OpenSession opens a session on the egress pod's relay (hostd's
// SessionOpener): the request carries no credential, the key is the
// Secret's. The session lives until ctx ends (the port-forward stream
// closes, which ends it in the pod) or the pod ends it.
func (m *Machine) OpenSession(ctx context.Context, req controlwire.OpenSessionRequest) (*controlwire.Session, <-chan error, error) {
	if m.relay == nil {
		return nil, nil, errors.New("this machine was made without the namespace's relay")
	}
	c, hint, err := m.relay.sessions(ctx)
	if err != nil {
		return nil, nil, err
	}
	stream, err := c.OpenSession(ctx, req)
	if err != nil {
		return nil, nil, hint(err)
	}
	sess, err := stream.Recv()
	if err != nil {
		stream.Close()
		return nil, nil, hint(err)
	}
	sess.BaseURL = m.relay.baseURL
	done := make(chan error, 1)
	go func() {
		defer stream.Close()
		for {
			if _, err := stream.Recv(); err != nil {
				done <- err
				return
			}
		}
	}()
	return sess, done, nil
}

// CloseSession ends a session on the egress pod's relay.
func (m *Machine) CloseSession(ctx context.Context, id string) (*controlwire.SessionUsage, error) {
	if m.relay == nil {
		return nil, errors.New("this machine was made without the namespace's relay")
	}
	c, hint, err := m.relay.sessions(ctx)
	if err != nil {
		return nil, err
	}
	defer c.Close()
	u, err := c.CloseSession(ctx, id)
	return u, hint(err)
}
