//go:build linux

package netstack

import (
	"context"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/coworkhq/cowork/hostd/netstack/policy"
)

// An ask whose API endpoint answers goes on; one whose endpoint cannot be
// reached is told so at once, with the endpoint (its password redacted)
// and what to check, instead of minutes of silent retries in the guest.
func TestCheckEndpoint(t *testing.T) {
	tn := newTestNet(t, policy.Policy{})
	tn.world.serveTCP(t, "203.0.113.7:8443", func(c net.Conn) { c.Close() })
	ctx := context.Background()

	up, err := tn.Sessions().Open("https://203.0.113.7:8443", "sk-ant-key", "", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if err := tn.CheckEndpoint(ctx, up); err != nil {
		t.Fatalf("a listening endpoint: %v", err)
	}

	down, err := tn.Sessions().Open("http://gw-user:gw-s3cret@203.0.113.8:9", "sk-ant-key", "", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	err = tn.CheckEndpoint(ctx, down)
	if err == nil {
		t.Fatal("an endpoint with nothing there passed the check")
	}
	msg := err.Error()
	for _, want := range []string{"the API endpoint", "203.0.113.8:9", "cannot be reached", "ANTHROPIC_BASE_URL"} {
		if !strings.Contains(msg, want) {
			t.Errorf("error %q lacks %q", msg, want)
		}
	}
	if strings.Contains(msg, "gw-s3cret") {
		t.Errorf("error %q carries the endpoint's password", msg)
	}
}
