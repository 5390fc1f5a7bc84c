//go:build linux

package netstack

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/coworkhq/cowork/hostd/netstack/policy"
	"github.com/coworkhq/cowork/internal/syncbuf"
)

// breakableListener fails every Accept once broken, as a listener whose
// socket went bad does (not a retryable error).
type breakableListener struct {
	net.Listener
	broken chan struct{}
}

var errBrokenListener = errors.New("the test broke this listener")

func (l *breakableListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	select {
	case <-l.broken:
		if c != nil {
			c.Close()
		}
		return nil, &net.OpError{Op: "accept", Net: "tcp", Err: errBrokenListener}
	default:
		return c, err
	}
}

// TestServeLoopFailureIsReported: the proxy's serve loop ends (its
// listener fails) while the network runs. It used to end in silence, the
// guest's proxied requests hanging with nothing to say why; now hostd logs
// it and ServeFailures (which status shows) names it, with its error.
func TestServeLoopFailureIsReported(t *testing.T) {
	broken := make(chan struct{})
	logs := &syncbuf.Buffer{}
	tn := newTestNet(t, policy.Policy{}, func(c *Config) {
		c.Log = slog.New(slog.NewTextHandler(logs, nil))
		c.wrapListener = func(service string, l net.Listener) net.Listener {
			if service != "proxy" {
				return l
			}
			return &breakableListener{Listener: l, broken: broken}
		}
	})
	if f := tn.ServeFailures(); len(f) != 0 {
		t.Fatalf("failures before any: %+v", f)
	}
	close(broken)
	// Wake the proxy's Accept: it fails for good.
	if c, err := tn.dialTCP(t, fmt.Sprintf("%s:%d", GatewayIP, ProxyPort)); err == nil {
		defer c.Close()
	}
	waitFor(t, "the proxy's failure to be reported", func() bool { return len(tn.ServeFailures()) > 0 })
	f := tn.ServeFailures()
	if len(f) != 1 || f[0].Service != "proxy" || !strings.Contains(f[0].Err, errBrokenListener.Error()) || f[0].At.IsZero() {
		t.Fatalf("failures %+v, want the proxy's, with its error", f)
	}
	if !strings.Contains(logs.String(), "proxy stopped serving") || !strings.Contains(logs.String(), errBrokenListener.Error()) {
		t.Fatalf("hostd's log does not say the proxy stopped:\n%s", logs)
	}
	// The other services still serve, and are not reported.
	if _, err := tn.lookup(t, "allowed.test"); err != nil {
		t.Fatalf("DNS after the proxy stopped: %v", err)
	}
}

// TestServeLoopEndIsNormalOnClose: the loops end when the stack closes;
// that is no failure. An error of the guest's making is kept to one line
// of bounded length.
func TestServeLoopEndIsNormalOnClose(t *testing.T) {
	tn := newTestNet(t, policy.Policy{})
	tn.served("DNS (UDP)", errors.New("long\n"+strings.Repeat("é", 1000)))
	f := tn.ServeFailures()
	if len(f) != 1 || strings.Contains(f[0].Err, "\n") || !utf8.ValidString(f[0].Err) || len(f[0].Err) > maxServeError+len("...") || !strings.HasSuffix(f[0].Err, "...") {
		t.Fatalf("failures %+v, want one, on one line, cut to %d bytes", f, maxServeError)
	}
	tn.served(errEndedAsAsked.Error(), errEndedAsAsked)
	tn.loops.close()
	tn.served("proxy", errBrokenListener)
	if f := tn.ServeFailures(); len(f) != 1 || f[0].Service != "DNS (UDP)" {
		t.Fatalf("failures %+v: a loop that ended as asked, or on Close, is no failure", f)
	}
}
