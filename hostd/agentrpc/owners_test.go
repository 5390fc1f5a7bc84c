package agentrpc

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/coworkhq/cowork/internal/agentcall"
)

// The owners a guest claims are taken only in their shape: for a socket
// asked about, with a pid, a uid and strings in bounds. A forged owner of
// a socket not asked about fails the whole reply.
func TestSocketOwnersChecksTheClaim(t *testing.T) {
	asked := []agentcall.Socket{{Proto: "tcp", Port: 40000, Peer: "192.0.2.1:443"}, {Proto: "udp", Port: 40001, Peer: "192.168.127.1:53"}}
	good := `{"socket_owners":{"owners":[{"proto":"tcp","port":40000,"peer":"192.0.2.1:443","pid":42,"uid":1000,"exec":"0123456789abcdef","comm":"curl","cmd":"curl -s x"}]}}` + "\n"
	c := hostileAgent(t, says(good))
	got, err := c.SocketOwners(context.Background(), asked)
	if err != nil || len(got) != 1 || got[0].PID != 42 || got[0].Exec != "0123456789abcdef" {
		t.Fatalf("a good reply: %+v, %v", got, err)
	}
	for name, c := range map[string]struct{ reply, says string }{
		"unsolicited": {`{"socket_owners":{"owners":[{"proto":"tcp","port":40002,"peer":"192.0.2.1:443","pid":42}]}}`, "not asked about"},
		"other peer":  {`{"socket_owners":{"owners":[{"proto":"tcp","port":40000,"peer":"192.0.2.9:443","pid":42}]}}`, "not asked about"},
		"pid 0":       {`{"socket_owners":{"owners":[{"proto":"tcp","port":40000,"peer":"192.0.2.1:443","pid":0}]}}`, "pid 0"},
		"huge pid":    {`{"socket_owners":{"owners":[{"proto":"tcp","port":40000,"peer":"192.0.2.1:443","pid":99999999}]}}`, "pid"},
		"uid":         {`{"socket_owners":{"owners":[{"proto":"tcp","port":40000,"peer":"192.0.2.1:443","pid":1,"uid":-1}]}}`, "uid -1"},
		"long cmd":    {`{"socket_owners":{"owners":[{"proto":"tcp","port":40000,"peer":"192.0.2.1:443","pid":1,"cmd":"` + strings.Repeat("x", agentcall.MaxOwnerCmd+1) + `"}]}}`, "strings"},
		"too many":    {`{"socket_owners":{"owners":[{},{},{}]}}`, "3 owners for 2"},
		"no reply":    {`{}`, "without socket_owners"},
	} {
		_, err := hostileAgent(t, says(c.reply+"\n")).SocketOwners(context.Background(), asked)
		var pe *ProtocolError
		if !errors.As(err, &pe) || !strings.Contains(err.Error(), c.says) {
			t.Errorf("%s: err = %v, want a ProtocolError saying %q", name, err, c.says)
		}
	}
	if _, err := c.SocketOwners(context.Background(), make([]agentcall.Socket, agentcall.MaxSocketQueries+1)); err == nil {
		t.Error("a batch over the bound was sent")
	}
}
