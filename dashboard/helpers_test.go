package dashboard

import (
	"bufio"
	"context"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/coworkhq/cowork/hostd/instance"
	"github.com/coworkhq/cowork/hostd/instance/instancetest"
	"github.com/coworkhq/cowork/hostd/netstack/audit"
)

// home makes a fresh COWORK_HOME with the default instance, and returns
// its paths.
func home(t *testing.T) instance.Paths {
	t.Helper()
	p, _ := instancetest.New(t, instance.Config{CPUs: 2, Memory: 2 << 30})
	return p
}

// addInstance adds an instance to the current COWORK_HOME.
func addInstance(t *testing.T, cfg instance.Config) instance.Paths {
	t.Helper()
	p, err := instance.PathsFor(cfg.Name)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Workspace == "" {
		cfg.Workspace = t.TempDir()
	}
	if err := os.MkdirAll(p.Dir(), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := cfg.Save(p.Dir()); err != nil {
		t.Fatal(err)
	}
	return p
}

// writeRecords appends records to the instance's audit log, as hostd
// does: through the chained writer.
func writeRecords(t testing.TB, p instance.Paths, recs ...*audit.Record) {
	t.Helper()
	l, err := audit.Open(p.NetworkLog(), p.Audit())
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	for _, r := range recs {
		if err := l.Write(r); err != nil {
			t.Fatal(err)
		}
	}
}

// start serves a dashboard for the test, looking for instances often.
func start(t testing.TB, o Options) *Server {
	t.Helper()
	if o.scanEvery == 0 {
		o.scanEvery = 50 * time.Millisecond
	}
	o.Logf = t.Logf
	s, err := Start(context.Background(), o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// event is one server-sent event.
type event struct{ kind, data string }

// stream reads the server's event stream.
type stream struct {
	events chan event
	resp   *http.Response
}

// openStream connects to the server's events, as the page does.
func openStream(t testing.TB, s *Server) *stream {
	t.Helper()
	req, _ := http.NewRequest("GET", strings.Replace(s.URL(), "/?", "/events?", 1), nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != "text/event-stream" {
		t.Fatalf("events: %s, %s", resp.Status, resp.Header.Get("Content-Type"))
	}
	st := &stream{events: make(chan event, 1<<14), resp: resp}
	t.Cleanup(func() { resp.Body.Close() })
	go func() {
		defer close(st.events)
		sc := bufio.NewScanner(resp.Body)
		sc.Buffer(make([]byte, 1<<20), 1<<24)
		var ev event
		for sc.Scan() {
			line := sc.Text()
			switch {
			case line == "":
				if ev.kind != "" {
					st.events <- ev
				}
				ev = event{}
			case strings.HasPrefix(line, "event: "):
				ev.kind = line[len("event: "):]
			case strings.HasPrefix(line, "data: "):
				ev.data = line[len("data: "):]
			}
		}
	}()
	return st
}

// next is the next event of kind, or fails t after within.
func (st *stream) next(t testing.TB, kind string, within time.Duration) event {
	t.Helper()
	deadline := time.After(within)
	for {
		select {
		case ev, ok := <-st.events:
			if !ok {
				t.Fatalf("the stream ended before a %s event", kind)
			}
			if ev.kind == kind {
				return ev
			}
		case <-deadline:
			t.Fatalf("no %s event within %s", kind, within)
		}
	}
}

// get asks the server for path, with the token and the given headers.
func get(t testing.TB, s *Server, path string, header map[string]string) *http.Response {
	t.Helper()
	u := strings.Replace(s.URL(), "/?", path+"?", 1)
	req, _ := http.NewRequest("GET", u, nil)
	for k, v := range header {
		if k == "Host" {
			req.Host = v
		} else {
			req.Header.Set(k, v)
		}
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { resp.Body.Close() })
	return resp
}
