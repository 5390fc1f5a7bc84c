package agentrpc

import (
	"bytes"
	"context"
	"net"
	"testing"
	"time"

	"github.com/coworkhq/cowork/internal/agentcall"
	"github.com/coworkhq/cowork/internal/termsafe"
)

// FuzzAgentReplies feeds arbitrary bytes to each call as the agent's
// answer: the host reads lines the guest wrote. Nothing may panic or
// hang; a call succeeds only on a reply of its own kind, and a
// provisioning stream yields no more statuses than the bytes held lines,
// each of a known state, and none after the first that is not running.
func FuzzAgentReplies(f *testing.F) {
	for _, s := range []string{
		`{"info":{"version":"0.1.0","boot_id":"b","uptime_ms":5120,"process":{"goroutines":4}}}` + "\n",
		`{"set_time":{"skew_nano":-3600000000000}}` + "\n",
		`{"shutdown":{}}` + "\n",
		`{"provisioning":{"state":"running","step":"installing"}}` + "\n" + `{"provisioning":{"state":"provisioned"}}` + "\n",
		`{"error":"unknown method","kind":"unimplemented"}` + "\n",
		`{"info":{"uptime_ms":1e99}}` + "\n",
		"\n\n\n",
		`{"provisioning":{"state":"failed"}}` + "\n" + `{"provisioning":{"state":"running"}}` + "\n",
		`{"share_release":{"users":[{"pid":901,"comm":"claude"}],"more":2}}` + "\n",
		`{"share_release":{"unmounted":true,"not_mounted":true}}` + "\n",
		`{"share_mount":{}}` + "\n",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		c := hostileAgent(t, func(c net.Conn, _ agentcall.Request) { c.Write(data) })
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if info, err := c.Info(ctx); err == nil && (info == nil || !bytes.Contains(data, []byte(`"`))) {
			t.Fatalf("info %+v from %q", info, data)
		}
		c.SetTime(ctx, time.Now())
		c.Shutdown(ctx)
		if r, err := c.ShareRelease(ctx, "/workspace", false); err == nil {
			if len(r.Users) > agentcall.MaxShareUsers || r.More < 0 || !r.Unmounted && len(r.Users) == 0 {
				t.Fatalf("share release %+v from %q", r, data)
			}
			for _, u := range r.Users {
				if u.PID <= 0 || len(u.Comm) > 64*4 || !termsafe.Safe(u.Comm, false) {
					t.Fatalf("share user %+v from %q", u, data)
				}
			}
		}
		c.ShareMount(ctx, "workspace", "/workspace", false)
		s, err := c.Provisioning(ctx)
		if err != nil {
			t.Fatal(err)
		}
		n := 0
		for {
			st, err := s.Recv()
			if err != nil {
				break
			}
			n++
			if !st.State.Known() || n > bytes.Count(data, []byte("\n")) {
				t.Fatalf("status %d %+v from %q", n, st, data)
			}
			if st.State != agentcall.StateRunning {
				if _, err := s.Recv(); err == nil {
					t.Fatalf("a status after %q", st.State)
				}
				break
			}
		}
		if ctx.Err() != nil {
			t.Fatal("a call hung on a finite answer")
		}
	})
}
