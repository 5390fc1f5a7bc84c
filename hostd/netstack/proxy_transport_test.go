//go:build linux

package netstack

import (
	"context"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/coworkhq/cowork/hostd/netstack/policy"
)

// The proxy's transport dials only the address a request was decided for:
// a request whose URL names another address, or that carries no decision,
// dials nothing, whatever the rest of the proxy does.
func TestProxyTransportDialsOnlyTheCheckedAddress(t *testing.T) {
	tn := newTestNet(t, policy.Policy{})
	var dials atomic.Int32
	tn.world.serveTCP(t, "198.51.100.9:80", func(c net.Conn) { dials.Add(1); c.Close() })
	tr := tn.proxyTransport()
	defer tr.CloseIdleConnections()
	for _, c := range []struct {
		name    string
		checked netip.AddrPort
	}{
		{"decided for another address", netip.MustParseAddrPort("198.51.100.8:80")},
		{"no decision", netip.AddrPort{}},
	} {
		ctx := context.Background()
		if c.checked.IsValid() {
			ctx = context.WithValue(ctx, targetKey{}, c.checked)
		}
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://198.51.100.9:80/", nil)
		resp, err := tr.RoundTrip(req)
		if err == nil {
			resp.Body.Close()
			t.Errorf("%s: the transport carried the request", c.name)
		} else if !strings.Contains(err.Error(), "refusing to dial") {
			t.Errorf("%s: %v", c.name, err)
		}
	}
	if n := dials.Load(); n != 0 {
		t.Errorf("the world saw %d connections", n)
	}
}
