package guestagent

import (
	"bufio"
	"context"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/coworkhq/cowork/guestagent/provision"
	"github.com/coworkhq/cowork/internal/agentcall"
	"github.com/coworkhq/cowork/internal/buildinfo"
)

// serveCall serves one call connection on a pipe; the host's end is
// returned, and the channel is closed when ServeCall returns.
func serveCall(t *testing.T, s *Server) (net.Conn, <-chan struct{}) {
	t.Helper()
	host, guest := net.Pipe()
	t.Cleanup(func() { host.Close() })
	done := make(chan struct{})
	go func() { s.ServeCall(guest); close(done) }()
	return host, done
}

// ask sends request (raw bytes, after the preface the listener read) and
// returns the reply lines until the agent closes the connection.
func ask(t *testing.T, s *Server, request string) []agentcall.Reply {
	t.Helper()
	c, done := serveCall(t, s)
	c.SetDeadline(time.Now().Add(time.Minute))
	go io.WriteString(c, request)
	var replies []agentcall.Reply
	r := agentcall.NewLineReader(c)
	for {
		var rep agentcall.Reply
		if err := r.Read(&rep); err != nil {
			if err != io.EOF {
				t.Fatalf("reading the replies to %.40q: %v", request, err)
			}
			break
		}
		replies = append(replies, rep)
	}
	<-done
	return replies
}

func TestCallInfo(t *testing.T) {
	marker := filepath.Join(t.TempDir(), "provisioned")
	s := New(Options{ProvisionedMarker: marker, DefaultUser: "someone"})
	reps := ask(t, s, `{"method":"info"}`+"\n")
	if len(reps) != 1 || reps[0].Info == nil {
		t.Fatalf("replies %+v", reps)
	}
	i := reps[0].Info
	host, _ := os.Hostname()
	if i.Version != buildinfo.Version || i.Hostname != host || i.DefaultUser != "someone" || i.Provisioned ||
		i.UptimeMs <= 0 || i.TimeUnixNano <= 0 || i.Process.Goroutines <= 0 || i.Process.RSSBytes <= 0 {
		t.Errorf("info %+v", i)
	}
	os.WriteFile(marker, nil, 0o600)
	if reps := ask(t, s, `{"method":"info"}`+"\n"); len(reps) != 1 || !reps[0].Info.Provisioned {
		t.Errorf("with the marker: %+v", reps)
	}
}

func TestCallSetTimeAndShutdown(t *testing.T) {
	set := make(chan time.Time, 1)
	off := make(chan struct{}, 1)
	s := New(Options{SetClock: func(t time.Time) error { set <- t; return nil }, PowerOff: func() error { off <- struct{}{}; return nil }})
	reps := ask(t, s, `{"method":"set_time","unix_nano":1000000000000000000}`+"\n")
	if len(reps) != 1 || reps[0].SetTime == nil || reps[0].SetTime.SkewNano <= 0 || !(<-set).Equal(time.Unix(0, 1e18)) {
		t.Errorf("set_time: %+v", reps)
	}
	reps = ask(t, s, `{"method":"set_time"}`+"\n")
	if len(reps) != 1 || reps[0].Kind != agentcall.KindInvalid || !strings.Contains(reps[0].Error, "no time given") {
		t.Errorf("set_time without a time: %+v", reps)
	}
	reps = ask(t, s, `{"method":"shutdown"}`+"\n")
	if len(reps) != 1 || reps[0].Shutdown == nil {
		t.Errorf("shutdown: %+v", reps)
	}
	select {
	case <-off:
	case <-time.After(time.Minute):
		t.Fatal("shutdown answered but did not power off")
	}
}

// What the agent does not understand it answers with one error line that
// says what is wrong, and closes the connection.
func TestCallRefusesBadRequests(t *testing.T) {
	s := New(Options{})
	for _, c := range []struct{ req, kind, says string }{
		{`{"method":"format_disk"}` + "\n", agentcall.KindUnimplemented, `unknown method "format_disk"`},
		{`{"method":"` + strings.Repeat("x", 1000) + `"}` + "\n", agentcall.KindUnimplemented, `unknown method "xxx`},
		{"GET / HTTP/1.1\r\n\r\n", agentcall.KindInvalid, "not the JSON expected"},
		{`{"method":"info"} {"method":"shutdown"}` + "\n", agentcall.KindInvalid, "not the JSON expected"},
		{strings.Repeat("x", agentcall.MaxLine+10), agentcall.KindInvalid, "a line over"},
	} {
		reps := ask(t, s, c.req)
		if len(reps) != 1 || reps[0].Kind != c.kind || !strings.Contains(reps[0].Error, c.says) || len(reps[0].Error) > 200 {
			t.Errorf("%.30q: replies %+v; want one %s error saying %q", c.req, reps, c.kind, c.says)
		}
	}
}

// A host that opens a call and says nothing is dropped after
// RequestTimeout; here the pipe's end closing stands in for it: the agent
// returns, it does not wait on.
func TestCallHostGoneBeforeTheRequest(t *testing.T) {
	c, done := serveCall(t, New(Options{}))
	c.Close()
	select {
	case <-done:
	case <-time.After(time.Minute):
		t.Fatal("ServeCall still runs after the host left")
	}
}

// A provisioning call streams until the host closes its side: the agent
// stops looking at the guest then.
func TestCallProvisioningEndsWhenTheHostLeaves(t *testing.T) {
	dir := t.TempDir()
	paths := provision.Paths{Marker: filepath.Join(dir, "provisioned"), StepFile: filepath.Join(dir, "step"), Unit: "cowork-provision.service"}
	noSystemd := func(context.Context, ...string) ([]byte, error) { return nil, os.ErrNotExist }
	s := New(Options{Provision: &provision.Reader{Paths: paths, Run: noSystemd}, ProvisionPoll: time.Millisecond})
	c, done := serveCall(t, s)
	go io.WriteString(c, `{"method":"provisioning"}`+"\n")
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil || !strings.HasPrefix(line, `{"provisioning":{"state":"running"`) {
		t.Fatalf("first line %q, %v", line, err)
	}
	c.Close()
	select {
	case <-done:
	case <-time.After(time.Minute):
		t.Fatal("the provisioning call went on after the host closed it")
	}
}
