package dashboardcmd

import (
	"context"
	"net"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/spf13/cobra"

	"github.com/coworkhq/cowork/cmd/cowork/cmdutil"
	"github.com/coworkhq/cowork/cmd/cowork/cmdutil/cmdtest"
	"github.com/coworkhq/cowork/cmd/cowork/iostreams"
	"github.com/coworkhq/cowork/hostd/instance"
	"github.com/coworkhq/cowork/hostd/instance/instancetest"
	"github.com/coworkhq/cowork/internal/syncbuf"
)

func parse(t *testing.T, args ...string) (*Options, error) {
	t.Helper()
	ios, _, _, _ := iostreams.Test()
	var got *Options
	cmd := NewCmdDashboard(ios, func(o *Options) error { got = o; return nil })
	cmdtest.Prepare(cmd, ios, args...)
	cmd.SetFlagErrorFunc(func(_ *cobra.Command, err error) error { return &cmdutil.FlagError{Err: err} })
	return got, cmd.Execute()
}

func TestDashboardFlags(t *testing.T) {
	for _, c := range []struct {
		args []string
		port int
		open bool
		test time.Duration
	}{
		{nil, 0, false, 24 * time.Hour},
		{[]string{"--port", "8765", "--open", "--since", "1h"}, 8765, true, time.Hour},
		{[]string{"--since", "0"}, 0, false, 0},
	} {
		o, err := parse(t, c.args...)
		if err != nil || o.Port != c.port || o.Open != c.open || o.Since != c.test || o.IO == nil || o.OpenURL == nil {
			t.Errorf("%q: %+v %v", c.args, o, err)
		}
	}
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"--port", "-1"}, "--port -1: want a TCP port"},
		{[]string{"--port", "65536"}, "--port 65536: want a TCP port"},
		{[]string{"--port", "http"}, `invalid argument "http" for "--port"`},
		{[]string{"--since", "-1h"}, "--since -1h0m0s: want how far back"},
		{[]string{"now"}, `unknown command "now" for "dashboard"`},
	} {
		o, err := parse(t, c.args...)
		if o != nil || cmdutil.ExitCode(err) != 2 || !strings.Contains(err.Error(), c.want) || strings.Contains(err.Error(), "\n") {
			t.Errorf("%q: %+v %v (exit %d), want a one-line usage error saying %q", c.args, o, err, cmdutil.ExitCode(err), c.want)
		}
	}
}

// The command prints the page's URL alone on stdout, progress on
// stderr, opens the browser on it when asked, serves it, and ends with
// its context.
func TestDashboardServesUntilInterrupted(t *testing.T) {
	instancetest.New(t, instance.Config{})
	ios, _, _, _ := iostreams.Test()
	var out, errOut syncbuf.Buffer
	ios.Out, ios.ErrOut = &out, &errOut
	opened := make(chan string, 1)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() {
		done <- Run(ctx, &Options{IO: ios, Open: true, OpenURL: func(u string) error { opened <- u; return nil }})
	}()
	var u string
	select {
	case u = <-opened:
	case err := <-done:
		t.Fatalf("ended: %v", err)
	case <-time.After(10 * time.Second):
		t.Fatal("no browser opened")
	}
	if out.String() != u+"\n" {
		t.Fatalf("stdout %q, opened %q", out.String(), u)
	}
	pu, err := url.Parse(u)
	if err != nil || pu.Hostname() != "127.0.0.1" || pu.Query().Get("token") == "" {
		t.Fatalf("URL %q", u)
	}
	resp, err := http.Get(u)
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("GET the page: %v %v", resp, err)
	}
	resp.Body.Close()
	if !strings.Contains(errOut.String(), "until Ctrl-C") {
		t.Errorf("stderr %q", errOut.String())
	}
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("ended with %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("did not end with its context")
	}
	if _, err := http.Get(u); err == nil {
		t.Error("still serving after it ended")
	}
}

// A port that is taken is an error that says what to do.
func TestDashboardOnATakenPort(t *testing.T) {
	instancetest.New(t, instance.Config{})
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	ios, _, out, _ := iostreams.Test()
	err = Run(context.Background(), &Options{IO: ios, Port: ln.Addr().(*net.TCPAddr).Port})
	if err == nil || !strings.Contains(err.Error(), "choose another --port") || out.Len() != 0 {
		t.Fatalf("%v; stdout %q", err, out.String())
	}
}
