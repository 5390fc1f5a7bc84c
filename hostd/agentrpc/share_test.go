package agentrpc

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/coworkhq/cowork/internal/agentcall"
	"github.com/coworkhq/cowork/internal/termsafe"
)

// The request says what the caller asked; the answer comes back with each
// command name cut and made printable.
func TestShareReleaseReply(t *testing.T) {
	got := make(chan agentcall.Request, 1)
	evil := "claude\x1b]52;c;ZWNobw==\x07\r\n" + strings.Repeat("z", 200)
	c := hostileAgent(t, func(c net.Conn, req agentcall.Request) {
		got <- req
		b, _ := agentcall.AppendLine(nil, &agentcall.Reply{ShareRelease: &agentcall.ShareReleaseReply{
			Users: []agentcall.ShareUser{{PID: 901, Comm: evil}, {PID: 77, Comm: "bash"}}, More: 0}})
		c.Write(b)
	})
	r, err := c.ShareRelease(context.Background(), "/workspace", true)
	if err != nil {
		t.Fatal(err)
	}
	if req := <-got; req.Method != agentcall.MethodShareRelease || req.Path != "/workspace" || !req.Force || req.Tag != "" {
		t.Errorf("request %+v", req)
	}
	if len(r.Users) != 2 || r.Users[0].PID != 901 || r.Users[1] != (agentcall.ShareUser{PID: 77, Comm: "bash"}) || r.Unmounted {
		t.Fatalf("reply %+v", r)
	}
	if cm := r.Users[0].Comm; len(cm) > 64*3 || !termsafe.Safe(cm, false) || strings.ContainsAny(cm, "\x1b\x07\r\n") || !strings.HasPrefix(cm, "claude") || strings.Count(cm, "z") > 64 {
		t.Errorf("comm %q", cm)
	}
	c = hostileAgent(t, says(`{"share_release":{"unmounted":true,"not_mounted":true}}`+"\n"))
	if r, err := c.ShareRelease(context.Background(), "/workspace", false); err != nil || !r.Unmounted || !r.NotMounted || r.Users != nil {
		t.Errorf("not mounted: %+v, %v", r, err)
	}
}

// A reply that breaks the call's rules is a protocol error, whatever it
// says besides.
func TestShareReleaseRefusesWhatIsNoAnswer(t *testing.T) {
	users := func(n int, pid string) string {
		us := make([]string, n)
		for i := range us {
			us[i] = fmt.Sprintf(`{"pid":%d,"comm":"sh"}`, 100+i)
		}
		if pid != "" {
			us[0] = `{"pid":` + pid + `,"comm":"sh"}`
		}
		return strings.Join(us, ",")
	}
	for name, c := range map[string]struct{ reply, word string }{
		"17 users":           {`{"share_release":{"users":[` + users(17, "") + `]}}`, "17 users listed"},
		"negative pid":       {`{"share_release":{"users":[` + users(1, "-5") + `]}}`, "pid -5"},
		"pid 0":              {`{"share_release":{"users":[` + users(2, "0") + `]}}`, "pid 0"},
		"pid over the limit": {`{"share_release":{"users":[` + users(1, "4194305") + `]}}`, "pid 4194305"},
		"pid overflow":       {`{"share_release":{"users":[` + users(1, "9223372036854775808") + `]}}`, "not the JSON"},
		"negative more":      {`{"share_release":{"users":[` + users(16, "") + `],"more":-1}}`, "-1 more"},
		"huge more":          {`{"share_release":{"users":[` + users(16, "") + `],"more":9000000000}}`, "9000000000 more"},
		"more, room left":    {`{"share_release":{"users":[` + users(3, "") + `],"more":2}}`, "more users counted than listed"},
		"not mounted, kept":  {`{"share_release":{"not_mounted":true}}`, "not mounted yet not unmounted"},
		"nothing done":       {`{"share_release":{}}`, "neither unmounted nor in use"},
		"no member":          {`{}`, "without share_release"},
		"another member":     {`{"share_mount":{}}`, "without share_release"},
		"null":               {`null`, "without share_release"},
		"users not a list":   {`{"share_release":{"users":{"pid":1}}}`, "not the JSON"},
	} {
		ctx, cancel := context.WithTimeout(context.Background(), patience)
		r, err := hostileAgent(t, says(c.reply+"\n")).ShareRelease(ctx, "/workspace", false)
		var perr *ProtocolError
		if !errors.As(err, &perr) || !strings.Contains(err.Error(), c.word) || r != nil {
			t.Errorf("%s: %+v, %v; want a protocol error saying %q", name, r, err, c.word)
		}
		cancel()
	}
	// 16 users and more counted is the most a reply lists.
	r, err := hostileAgent(t, says(`{"share_release":{"users":[`+users(16, "")+`],"more":4194304}}`+"\n")).ShareRelease(context.Background(), "/w", false)
	if err != nil || len(r.Users) != 16 || r.More != 4194304 {
		t.Errorf("16 users and more: %+v, %v", r, err)
	}
}

// A reply of a million users is refused at the line's bound: the host
// reads no more than a line may hold, however much the guest sends.
func TestShareReleaseHugeReplyIsBounded(t *testing.T) {
	const n = 1_000_000
	user := []byte(`{"pid":12345,"comm":"xxxxxxxxxxxxxxxx"},`)
	chunk := []byte(strings.Repeat(string(user), 1000))
	sent := make(chan int, 1)
	c := hostileAgent(t, func(c net.Conn, _ agentcall.Request) {
		total, err := c.Write([]byte(`{"share_release":{"users":[`))
		for i := 0; i < n/1000 && err == nil; i++ {
			var k int
			k, err = c.Write(chunk)
			total += k
		}
		if err == nil {
			c.Write([]byte(`{"pid":1,"comm":"x"}]}}` + "\n"))
		}
		sent <- total
	})
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	ctx, cancel := context.WithTimeout(context.Background(), patience)
	defer cancel()
	r, err := c.ShareRelease(ctx, "/workspace", false)
	runtime.ReadMemStats(&after)
	var perr *ProtocolError
	if !errors.As(err, &perr) || !strings.Contains(err.Error(), "a line over") || r != nil {
		t.Fatalf("%+v, %v; want a protocol error for the line's length", r, err)
	}
	if got := <-sent; got >= n*len(user) {
		t.Errorf("the host read the whole %d bytes", got)
	}
	if alloc := after.TotalAlloc - before.TotalAlloc; alloc > 8<<20 {
		t.Errorf("the call allocated %d MiB for a reply it refuses", alloc>>20)
	}
}

func TestShareMount(t *testing.T) {
	got := make(chan agentcall.Request, 1)
	c := hostileAgent(t, func(c net.Conn, req agentcall.Request) {
		got <- req
		io.WriteString(c, `{"share_mount":{}}`+"\n")
	})
	if err := c.ShareMount(context.Background(), "workspace", "/workspace", false); err != nil {
		t.Fatal(err)
	}
	if req := <-got; req.Method != agentcall.MethodShareMount || req.Tag != "workspace" || req.Path != "/workspace" || req.Force {
		t.Errorf("request %+v", req)
	}
	for _, reply := range []string{`{}`, `{"share_release":{"unmounted":true}}`, `null`} {
		err := hostileAgent(t, says(reply+"\n")).ShareMount(context.Background(), "workspace", "/workspace", false)
		var perr *ProtocolError
		if !errors.As(err, &perr) || !strings.Contains(err.Error(), "without share_mount") {
			t.Errorf("%s: %v", reply, err)
		}
	}
	err := hostileAgent(t, says(`{"error":"share_mount: virtiofs tag \"workspace\" did not appear","kind":"failed"}`+"\n")).ShareMount(context.Background(), "workspace", "/workspace", false)
	var re *RefusedError
	if !errors.As(err, &re) || re.Kind != agentcall.KindFailed || !strings.Contains(err.Error(), "did not appear") || IsUnimplemented(err) {
		t.Errorf("refused: %v", err)
	}
}

// An agent older than the share calls answers them as unimplemented, and
// the caller can tell.
func TestShareCallsUnimplemented(t *testing.T) {
	old := says(`{"error":"unknown method \"share_x\": this agent serves info, set_time, shutdown and provisioning","kind":"unimplemented"}` + "\n")
	_, err := hostileAgent(t, old).ShareRelease(context.Background(), "/workspace", false)
	if !IsUnimplemented(err) {
		t.Errorf("share_release: %v", err)
	}
	if err := hostileAgent(t, old).ShareMount(context.Background(), "workspace", "/workspace", false); !IsUnimplemented(err) {
		t.Errorf("share_mount: %v", err)
	}
}

// A mount may wait for its device longer than other calls may take; with
// no deadline of the caller's it has one of its own, and a silent agent
// holds it only that long.
func TestShareMountDeadline(t *testing.T) {
	if shareMountTimeout < agentcall.ShareMountWait+5*time.Second || shareMountTimeout <= callTimeout {
		t.Errorf("a share mount's timeout %v leaves no room for the agent's wait of %v", shareMountTimeout, agentcall.ShareMountWait)
	}
	if c, _ := New(nil); c.mountTimeout != shareMountTimeout {
		t.Errorf("a new client's mount timeout %v", c.mountTimeout)
	}
	c := hostileAgent(t, func(c net.Conn, _ agentcall.Request) { io.Copy(io.Discard, c) })
	c.mountTimeout = 100 * time.Millisecond
	done := make(chan error, 1)
	go func() { done <- c.ShareMount(context.Background(), "workspace", "/workspace", false) }()
	select {
	case err := <-done:
		if !errors.Is(err, context.DeadlineExceeded) {
			t.Errorf("%v; want the deadline's error", err)
		}
	case <-time.After(callTimeout / 2): // far past the mount's timeout, short of the other calls'
		t.Fatal("the mount did not end at its own timeout")
	}
}

// A fork's answer to personalize is the guest's: a machine-id that is not
// 32 hex digits (a path, a line of text for the log) is refused.
func TestPersonalizeChecksTheReply(t *testing.T) {
	seed := make([]byte, agentcall.SeedSize)
	for name, c := range map[string]struct{ reply, word string }{
		"no member":     {`{}`, "without personalize"},
		"short id":      {`{"personalize":{"machine_id":"abc"}}`, "not 32 hex digits"},
		"upper case":    {`{"personalize":{"machine_id":"0123456789ABCDEF0123456789ABCDEF"}}`, "not 32 hex digits"},
		"escape":        {`{"personalize":{"machine_id":"0123456789abcdef0123456789abcd\u001b["}}`, "not 32 hex digits"},
		"newline after": {`{"personalize":{"machine_id":"0123456789abcdef0123456789abcdef\n"}}`, "not 32 hex digits"},
	} {
		ctx, cancel := context.WithTimeout(context.Background(), patience)
		id, err := hostileAgent(t, says(c.reply+"\n")).Personalize(ctx, seed, "cowork")
		var perr *ProtocolError
		if !errors.As(err, &perr) || !strings.Contains(err.Error(), c.word) || id != "" {
			t.Errorf("%s: %q, %v; want a protocol error saying %q", name, id, err, c.word)
		}
		cancel()
	}
	id, err := hostileAgent(t, says(`{"personalize":{"machine_id":"0123456789abcdef0123456789abcdef"}}`+"\n")).Personalize(context.Background(), seed, "cowork")
	if err != nil || id != "0123456789abcdef0123456789abcdef" {
		t.Errorf("a good reply: %q %v", id, err)
	}
}

// A guest's listeners are its claim: a good list passes, anything out of
// its bounds is a protocol error.
func TestListenersChecksTheGuestsClaim(t *testing.T) {
	good := `{"listeners":{"ports":[{"proto":"tcp","addr":"0.0.0.0","port":8000},{"proto":"udp","addr":"::","port":53}]}}` + "\n"
	ls, err := hostileAgent(t, says(good)).Listeners(context.Background())
	if err != nil || len(ls) != 2 || ls[0].Port != 8000 || ls[1].Proto != "udp" {
		t.Fatalf("a good reply: %+v %v", ls, err)
	}
	many := `{"listeners":{"ports":[` + strings.Repeat(`{"proto":"tcp","addr":"0.0.0.0","port":1},`, agentcall.MaxListeners) + `{"proto":"tcp","addr":"0.0.0.0","port":2}]}}` + "\n"
	for name, reply := range map[string]string{
		"none":       `{}` + "\n",
		"too many":   many,
		"port 0":     `{"listeners":{"ports":[{"proto":"tcp","addr":"0.0.0.0","port":0}]}}` + "\n",
		"port 70000": `{"listeners":{"ports":[{"proto":"tcp","addr":"0.0.0.0","port":70000}]}}` + "\n",
		"sctp":       `{"listeners":{"ports":[{"proto":"sctp","addr":"0.0.0.0","port":80}]}}` + "\n",
		"no address": `{"listeners":{"ports":[{"proto":"tcp","addr":"host\u001b[2J","port":80}]}}` + "\n",
	} {
		var pe *ProtocolError
		if _, err := hostileAgent(t, says(reply)).Listeners(context.Background()); !errors.As(err, &pe) {
			t.Errorf("%s: %v, want a protocol error", name, err)
		}
	}
}
