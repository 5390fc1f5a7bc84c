// Package dashboard is `cowork dashboard`: a page on the host's loopback
// that shows the instances, the guest's flows and DNS queries with their
// verdicts as they happen, and what each task spent on API calls. It
// reads the instances' audit logs as `cowork proxy -f` does, and streams
// them to the page as server-sent events. The guest is hostile: every
// string it wrote is bounded and made inert here, and written as text
// (never as HTML) by the page; see guard.go for who may ask.
package dashboard

import (
	"context"
	"embed"
	"errors"
	"fmt"
	"html/template"
	"net"
	"net/http"
	"net/url"
	"sync"
	"time"
)

//go:embed static
var static embed.FS

// page is parsed at the first request, not at every cowork command's
// start (the CLI links this package).
var page = sync.OnceValue(func() *template.Template {
	return template.Must(template.ParseFS(static, "static/index.html"))
})

// Options says where the dashboard listens and how much it shows.
type Options struct {
	// Addr is the address to listen on: 127.0.0.1 and a port, 0 for any
	// free one (the default). No other address is accepted: the page
	// shows what the guest did, and is for this machine's user alone.
	Addr string
	// Since is how far back the logs are read at start, for the backlog
	// and the spend of each task; 0 reads all of them.
	Since time.Duration
	// Backlog is how many of the newest records a page gets when it
	// connects (default 500).
	Backlog int
	// Logf, when set, is told of problems reading the logs.
	Logf func(format string, args ...any)

	// For tests: how often instances are looked for (default 2s), the
	// bytes a client may fall behind by before it is dropped (default
	// 8 MiB), and how many clients may stream at once (default 16).
	scanEvery time.Duration
	queue     int
	maxSubs   int
}

// Server is a running dashboard.
type Server struct {
	url   string
	token string
	srv   *http.Server
	feed  *feed
	stop  context.CancelFunc
	done  sync.WaitGroup
}

// Start listens on o.Addr, starts following the instances' logs, and
// serves the page until Close or ctx ends. The page's URL, with its
// token, is URL().
func Start(ctx context.Context, o Options) (*Server, error) {
	addr, err := loopbackAddr(o.Addr)
	if err != nil {
		return nil, err
	}
	if o.Backlog <= 0 {
		o.Backlog = 500
	}
	if o.scanEvery <= 0 {
		o.scanEvery = 2 * time.Second
	}
	if o.queue <= 0 {
		o.queue = 8 << 20
	}
	if o.maxSubs <= 0 {
		o.maxSubs = 16
	}
	if o.Logf == nil {
		o.Logf = func(string, ...any) {}
	}
	token, err := newToken()
	if err != nil {
		return nil, err
	}
	ln, err := net.Listen("tcp4", addr)
	if err != nil {
		return nil, fmt.Errorf("listen on %s: %w; choose another --port, or 0 for any free one", addr, err)
	}
	_, port, _ := net.SplitHostPort(ln.Addr().String())
	s := &Server{token: token, feed: newFeed(o.Backlog, o.queue, o.maxSubs)}
	s.url = "http://127.0.0.1:" + port + "/?token=" + url.QueryEscape(token)
	var since time.Time
	if o.Since > 0 {
		since = time.Now().Add(-o.Since)
	}
	ctx, s.stop = context.WithCancel(ctx)
	w := &watcher{feed: s.feed, since: since, every: o.scanEvery, logf: o.Logf, book: newSpendBook(),
		copies: newCopyBook(), logs: map[string]context.CancelFunc{}}
	s.srv = &http.Server{
		Handler:           guard(token, port, s.routes(ctx)),
		ReadHeaderTimeout: 10 * time.Second,
		MaxHeaderBytes:    16 << 10,
		BaseContext:       func(net.Listener) context.Context { return ctx },
	}
	s.done.Add(2)
	go func() { defer s.done.Done(); w.run(ctx) }()
	go func() {
		defer s.done.Done()
		if err := s.srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			o.Logf("serve: %v", err)
		}
	}()
	context.AfterFunc(ctx, func() { s.srv.Close() })
	return s, nil
}

// URL is the page's address, token included: whoever has it sees what
// the guests did.
func (s *Server) URL() string { return s.url }

// Close stops serving, ends the pages' streams and stops reading logs.
func (s *Server) Close() error {
	s.stop()
	err := s.srv.Close()
	s.done.Wait()
	return err
}

// loopbackAddr is addr with its defaults, or an error when it is not
// 127.0.0.1.
func loopbackAddr(addr string) (string, error) {
	if addr == "" {
		return "127.0.0.1:0", nil
	}
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return "", fmt.Errorf("dashboard address %q: %w", addr, err)
	}
	if host != "127.0.0.1" {
		return "", fmt.Errorf("dashboard address %q: the dashboard listens on 127.0.0.1 only (it shows what the guest did; reach it from elsewhere through an SSH tunnel)", addr)
	}
	return net.JoinHostPort(host, port), nil
}

func (s *Server) routes(ctx context.Context) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /{$}", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		page().Execute(w, s.token)
	})
	for name, typ := range map[string]string{"app.js": "text/javascript; charset=utf-8", "spend.js": "text/javascript; charset=utf-8", "app.css": "text/css; charset=utf-8", "icon.svg": "image/svg+xml"} {
		b, err := static.ReadFile("static/" + name)
		if err != nil {
			panic(err) // embedded: a build without it is broken
		}
		mux.HandleFunc("GET /"+name, func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", typ)
			w.Write(b)
		})
	}
	mux.HandleFunc("GET /events", func(w http.ResponseWriter, r *http.Request) { s.events(ctx, w, r) })
	mux.HandleFunc("GET /api/state", s.state)
	return mux
}
