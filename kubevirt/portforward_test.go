package kubevirt

import (
	"bufio"
	"context"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/util/httpstream"
	spdyserver "k8s.io/apimachinery/pkg/util/httpstream/spdy"
	"k8s.io/client-go/rest"
)

// APIPortForwarder speaks the API server's pods/portforward: it dials
// the pod's subresource, upgrades to SPDY with the port-forward
// protocol, opens the error and data streams for the port, and the data
// stream is a net.Conn both ways; closing it closes the connection. The
// server here is apimachinery's own SPDY side, joining the data stream
// to a local TCP port as the kubelet joins it to the pod's.
func TestAPIPortForwarderReachesThePodsPort(t *testing.T) {
	target, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer target.Close()
	targetEOF := make(chan struct{})
	go func() {
		c, err := target.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		r := bufio.NewReader(c)
		line, _ := r.ReadString('\n')
		io.WriteString(c, "echo "+line)
		io.Copy(io.Discard, r) // until the forward closes
		close(targetEOF)
	}()

	var mu sync.Mutex
	var path string
	var ports []string
	srv := portForwardServer(t, func(r *http.Request) {
		mu.Lock()
		path = r.Method + " " + r.URL.Path
		mu.Unlock()
	}, func(s httpstream.Stream) {
		mu.Lock()
		ports = append(ports, s.Headers().Get(corev1.StreamType)+":"+s.Headers().Get(corev1.PortHeader))
		mu.Unlock()
		if s.Headers().Get(corev1.StreamType) != corev1.StreamTypeData {
			return
		}
		go func() {
			c, err := net.Dial("tcp", target.Addr().String())
			if err != nil {
				s.Reset()
				return
			}
			go func() { io.Copy(c, s); c.Close() }()
			io.Copy(s, c)
		}()
	})

	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	c, err := APIPortForwarder(&rest.Config{Host: srv.URL})(ctx, "sandboxes", "cowork-egress-1", SessionsPort)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.WriteString(c, "hello\n"); err != nil {
		t.Fatal(err)
	}
	got, err := bufio.NewReader(c).ReadString('\n')
	if err != nil || got != "echo hello\n" {
		t.Fatalf("through the forward: %q, %v", got, err)
	}
	mu.Lock()
	if path != "POST /api/v1/namespaces/sandboxes/pods/cowork-egress-1/portforward" || len(ports) != 2 || ports[0] != "error:7892" || ports[1] != "data:7892" {
		t.Errorf("the forward asked %s for streams %v", path, ports)
	}
	mu.Unlock()
	c.Close()
	select {
	case <-targetEOF:
	case <-time.After(10 * time.Second):
		t.Error("the pod's side did not see the forward close")
	}
}

// A port the kubelet cannot reach ends the data stream; why it could not
// is on the error stream, and the reader gets that, not a bare EOF.
func TestAPIPortForwarderSaysWhyThePortIsNotThere(t *testing.T) {
	var errStream httpstream.Stream // the client opens it first
	srv := portForwardServer(t, nil, func(s httpstream.Stream) {
		if s.Headers().Get(corev1.StreamType) == corev1.StreamTypeError {
			errStream = s
			return
		}
		// As the kubelet does when nothing listens there.
		io.WriteString(errStream, "error forwarding port 7892 to pod 1234, uid : failed to execute portforward in network namespace: dial tcp4 127.0.0.1:7892: connect: connection refused\x1b[2J")
		errStream.Close()
		s.Close()
	})
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	c, err := APIPortForwarder(&rest.Config{Host: srv.URL})(ctx, "sandboxes", "cowork-egress-1", SessionsPort)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_, err = io.ReadAll(c)
	if err == nil || !strings.Contains(err.Error(), "connect: connection refused") || strings.ContainsRune(err.Error(), '\x1b') {
		t.Errorf("read of a port not there: %v; want the kubelet's reason, printable", err)
	}
}

// portForwardServer is an API server's pods/portforward as apimachinery
// serves it: each request (seen, when not nil) is upgraded to SPDY, and
// each stream the client opens goes to stream, in order, on one
// goroutine; the server closes with the test.
func portForwardServer(t *testing.T, seen func(*http.Request), stream func(httpstream.Stream)) *httptest.Server {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if seen != nil {
			seen(r)
		}
		if _, err := httpstream.Handshake(r, w, []string{portForwardProtocol}); err != nil {
			return
		}
		streams := make(chan httpstream.Stream, 4)
		conn := spdyserver.NewResponseUpgrader().UpgradeResponse(w, r, func(s httpstream.Stream, _ <-chan struct{}) error {
			streams <- s
			return nil
		})
		if conn == nil {
			return
		}
		defer conn.Close()
		for {
			select {
			case s := <-streams:
				stream(s)
			case <-conn.CloseChan():
				return
			}
		}
	}))
	t.Cleanup(srv.Close)
	return srv
}
