package hostd

import (
	"context"
	"testing"

	"github.com/coworkhq/cowork/hostd/controlwire"
)

// A publish request a client got wrong is refused as invalid_argument
// before hostd looks at its network (none runs here).
func TestPublishRefusesBadRequests(t *testing.T) {
	s := &controlServer{d: &Daemon{}}
	for _, req := range []controlwire.PublishRequest{
		{HostAddr: "localhost:80", GuestPort: 80},
		{HostAddr: "127.0.0.1", GuestPort: 80},
		{HostAddr: "127.0.0.1:70000", GuestPort: 80},
		{HostAddr: "127.0.0.1:x", GuestPort: 80},
		{HostAddr: "127.0.0.1:0", GuestPort: 0},
		{HostAddr: "127.0.0.1:0", GuestPort: 65536},
		{HostAddr: "127.0.0.1:0", GuestPort: 80, Proto: "sctp"},
	} {
		if _, err := s.Publish(context.Background(), req); controlwire.CodeOf(err) != controlwire.CodeInvalidArgument {
			t.Errorf("%+v: %v, want invalid_argument", req, err)
		}
	}
	if _, err := s.Publish(context.Background(), controlwire.PublishRequest{HostAddr: "127.0.0.1:0", GuestPort: 80}); controlwire.CodeOf(err) != controlwire.CodeUnavailable {
		t.Errorf("a good request with no network: %v, want unavailable", err)
	}
}
