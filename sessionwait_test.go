package cowork

import (
	"testing"
	"time"

	"github.com/coworkhq/cowork/hostd/netstack"
)

// hostd refuses a session whose endpoint gives no answer once its check
// times out, with a message that says what to do. A client that gave up at
// the same moment or sooner would show "context deadline exceeded" instead
// (hostd does not import netstack, so the two constants are tied here).
func TestSessionWaitOutlastsTheEndpointCheck(t *testing.T) {
	if margin := sessionOpenWait - netstack.EndpointCheckTimeout; margin < 5*time.Second {
		t.Fatalf("the client waits %s for a session, hostd checks the endpoint for up to %s: its answer may come too late",
			sessionOpenWait, netstack.EndpointCheckTimeout)
	}
}
