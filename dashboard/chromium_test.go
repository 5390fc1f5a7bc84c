package dashboard

import (
	"context"
	"encoding/json"
	"fmt"
	"net/url"
	"os"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/coworkhq/cowork/hostd/netstack/audit"
	"github.com/coworkhq/cowork/internal/cdp"
)

// chromium is Debian's chromium, which make test installs.
func chromium(t *testing.T) string {
	t.Helper()
	for _, name := range []string{"chromium", "chromium-browser"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	if os.Getenv("COWORK_TEST_REQUIRE_TOOLS") != "" {
		t.Fatal("chromium is not installed (make test installs it: hack/deps.sh chromium)")
	}
	t.Skip("chromium not installed; make test installs it (hack/deps.sh chromium)")
	return ""
}

// browser is a headless Chromium on a page of the dashboard, with every
// request the page made and every problem it reported.
type browser struct {
	*cdp.Browser
	session string

	mu       sync.Mutex
	requests []string // URLs the page asked for
	problems []string // exceptions, and errors logged (CSP refusals among them)
}

func openPage(t *testing.T, s *Server) *browser {
	t.Helper()
	b := &browser{}
	cb, err := cdp.Launch(chromium(t), t.TempDir(), b.event, "--window-size=1280,800")
	if err != nil {
		t.Fatal(err)
	}
	b.Browser = cb
	t.Cleanup(func() {
		if err := cb.Close(); err != nil {
			t.Logf("chromium: %v\n%s", err, cb.Stderr())
		}
	})
	// A bound on chromium's start, generous: under load (a busy CI
	// machine) its first calls took over 10 s.
	ctx, cancel := context.WithTimeout(context.Background(), 45*time.Second)
	defer cancel()
	if b.session, err = cb.Page(ctx, "about:blank"); err != nil {
		t.Fatalf("%v\n%s", err, cb.Stderr())
	}
	for _, domain := range []string{"Network", "Log", "Runtime", "Page"} {
		if err := cb.Call(ctx, b.session, domain+".enable", nil, nil); err != nil {
			t.Fatalf("%s.enable: %v\n%s", domain, err, cb.Stderr())
		}
	}
	if err := cb.Call(ctx, b.session, "Page.navigate", map[string]any{"url": s.URL()}, nil); err != nil {
		t.Fatal(err)
	}
	return b
}

func (b *browser) event(ev cdp.Event) {
	b.mu.Lock()
	defer b.mu.Unlock()
	switch ev.Method {
	case "Network.requestWillBeSent":
		var p struct{ Request struct{ URL string } }
		json.Unmarshal(ev.Params, &p)
		b.requests = append(b.requests, p.Request.URL)
	case "Runtime.exceptionThrown":
		b.problems = append(b.problems, string(ev.Params))
	case "Log.entryAdded":
		var p struct {
			Entry struct{ Level, Text, URL string }
		}
		json.Unmarshal(ev.Params, &p)
		if p.Entry.Level == "error" {
			b.problems = append(b.problems, p.Entry.Text+" "+p.Entry.URL)
		}
	}
}

// eval is expr's value in the page.
func (b *browser) eval(t *testing.T, expr string, v any) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := b.Eval(ctx, b.session, expr, v); err != nil {
		t.Fatal(err)
	}
}

// waitFor polls the page until expr is true, or fails t after within.
func (b *browser) waitFor(t *testing.T, what, expr string, within time.Duration) time.Duration {
	t.Helper()
	began := time.Now()
	for {
		var ok bool
		b.eval(t, "!!("+expr+")", &ok)
		if ok {
			return time.Since(began)
		}
		if time.Since(began) > within {
			var dump string
			b.eval(t, "document.body.innerText", &dump)
			t.Fatalf("%s: not within %s; the page says:\n%s", what, within, dump)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// key presses key (a character, or a named key like Escape) in the page.
func (b *browser) key(t *testing.T, key string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	down := map[string]any{"type": "keyDown", "key": key}
	if len([]rune(key)) == 1 {
		down["text"] = key
	}
	if err := b.Call(ctx, b.session, "Input.dispatchKeyEvent", down, nil); err != nil {
		t.Fatal(err)
	}
	if err := b.Call(ctx, b.session, "Input.dispatchKeyEvent", map[string]any{"type": "keyUp", "key": key}, nil); err != nil {
		t.Fatal(err)
	}
}

// The page in a real browser: it shows the log's records, a flow appended
// to network.jsonl appears in its table, a host name made of markup stays
// text, the keyboard filters and moves through the table, and no request
// it makes leaves the server's own address.
func TestThePageInChromium(t *testing.T) {
	p := home(t)
	now := time.Now()
	writeRecords(t, p,
		&audit.Record{Time: now.Add(-time.Minute), Kind: audit.KindDNS, Verdict: audit.Allow, Name: "pypi.org", QType: "A", RCode: "NOERROR", Answers: []string{"151.101.0.223"}, Rule: "default"},
		&audit.Record{Time: now.Add(-time.Minute), Kind: audit.KindTCP, Verdict: audit.Allow, Name: "pypi.org", Dst: "151.101.0.223:443", BytesOut: 900, BytesIn: 120000, Rule: "default"},
		&audit.Record{Time: now.Add(-50 * time.Second), Kind: audit.KindTCP, Verdict: audit.Deny, Name: markup + "\x1b[2J\u202e", Dst: "10.0.0.1:22", Rule: "private network"},
		&audit.Record{Time: now.Add(-40 * time.Second), Kind: audit.KindRelay, Verdict: audit.Allow, Name: "api.anthropic.com", Session: "s1", Method: "POST", URL: "/v1/messages", Status: 200},
	)
	began := time.Now()
	s := start(t, Options{})
	b := openPage(t, s)
	loaded := b.waitFor(t, "the backlog", `document.querySelectorAll("#flows-body tr").length === 4 && document.getElementById("conn").textContent === "live"`, 10*time.Second)
	t.Logf("chromium up and the page showing the backlog in %s", loaded.Round(time.Millisecond))

	// A flow the guest makes now appears.
	writeRecords(t, p, &audit.Record{Kind: audit.KindTCP, Verdict: audit.Allow, Name: "files.pythonhosted.org", Dst: "151.101.1.63:443", BytesIn: 4 << 20, Rule: "default"})
	took := b.waitFor(t, "the new flow", `document.getElementById("flows-body").rows[0].innerText.includes("files.pythonhosted.org")`, 5*time.Second)
	t.Logf("the new flow showed %s after it was written", took.Round(time.Millisecond))

	b.waitFor(t, "the task's spend", `document.getElementById("tasks-body").innerText.includes("session s1") && document.querySelectorAll("#chart rect").length === 1`, 3*time.Second)

	// The markup is text: no element made of it, nothing ran.
	var page struct {
		Imgs   int
		Title  string
		Text   string
		Instan string
	}
	b.eval(t, `({imgs: document.querySelectorAll("main img").length, title: document.title,
		text: document.getElementById("flows-body").innerText, instan: document.getElementById("instances-body").innerText})`, &page)
	if page.Imgs != 0 || page.Title != "cowork dashboard" || !strings.Contains(page.Text, `<img src=x onerror="document.title='owned'">␛[2J`) || strings.Contains(page.Text, "\u202e") {
		t.Errorf("the hostile name: %d images, title %q, text:\n%s", page.Imgs, page.Title, page.Text)
	}
	if !strings.Contains(page.Instan, "sandbox") || !strings.Contains(page.Instan, "stopped") {
		t.Errorf("instances %q", page.Instan)
	}

	// The keyboard: / to the filter, the filter applied, Escape back to
	// the table, j to a row, Enter to its record.
	b.key(t, "/")
	var active string
	b.eval(t, "document.activeElement.id", &active)
	if active != "f-text" {
		t.Fatalf("/ focused %q", active)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := b.Call(ctx, b.session, "Input.insertText", map[string]any{"text": "10.0.0"}, nil); err != nil {
		t.Fatal(err)
	}
	b.waitFor(t, "the filter", `document.querySelectorAll("#flows-body tr").length === 1`, 3*time.Second)
	b.key(t, "Escape")
	b.eval(t, "document.activeElement.id", &active)
	if active != "flows-body" {
		t.Fatalf("Escape left the focus on %q", active)
	}
	b.key(t, "Enter")
	b.waitFor(t, "the record's detail", `!document.getElementById("detail").hidden && document.getElementById("detail-body").innerText.includes("private network")`, 3*time.Second)
	b.key(t, "Escape")
	b.eval(t, `(f => { f.value = ""; f.dispatchEvent(new Event("input")); })(document.getElementById("f-text"))`, nil)
	b.waitFor(t, "the filter cleared", `document.getElementById("detail").hidden && document.querySelectorAll("#flows-body tr").length === 5`, 3*time.Second)
	// j and k move the selection through the rows, newest first.
	selected := func() int {
		var i int
		b.eval(t, `Array.from(document.getElementById("flows-body").rows).findIndex(r => r.getAttribute("aria-selected") === "true")`, &i)
		return i
	}
	b.key(t, "g")
	if got := selected(); got != 0 {
		t.Errorf("g selected row %d", got)
	}
	for _, k := range []string{"j", "j", "ArrowDown", "k"} {
		b.key(t, k)
	}
	if got := selected(); got != 2 {
		t.Errorf("j j ↓ k selected row %d, want 2", got)
	}
	b.key(t, "G")
	if got := selected(); got != 4 {
		t.Errorf("G selected row %d, want the oldest, 4", got)
	}

	// Every request went to the server, at its own address.
	u, _ := url.Parse(s.URL())
	b.mu.Lock()
	defer b.mu.Unlock()
	if len(b.requests) < 4 {
		t.Errorf("only %d requests seen: %q", len(b.requests), b.requests)
	}
	for _, r := range b.requests {
		ru, err := url.Parse(r)
		if err != nil || ru.Scheme != "http" || ru.Host != u.Host || ru.Query().Get("token") != s.token {
			t.Errorf("a request to %q", r)
		}
	}
	for _, p := range b.problems {
		t.Errorf("the page reported: %s", p)
	}
	t.Logf("%d requests, all to %s; the test took %s", len(b.requests), u.Host, time.Since(began).Round(time.Millisecond))
}

// A page paused (or in a background tab, which gets no frames) while a
// guest floods its log holds only the newest records, says how many it
// did not keep, and shows the newest when it resumes. The page also
// takes the token out of its address once loaded and goes on streaming,
// and isolates the guest's text of each cell (direction marks pass
// termsafe).
func TestAPausedPageHoldsOnlyTheNewest(t *testing.T) {
	home(t)
	s := start(t, Options{queue: 64 << 20})
	b := openPage(t, s)
	t0 := time.Now()
	publish := func(from, to int) {
		for i := from; i < to; i++ {
			at := t0.Add(time.Duration(i) * time.Millisecond)
			s.feed.publishRecord(&Event{Instance: "sandbox", Log: LogNetwork, time: at,
				Record: map[string]any{"time": at, "kind": "dns", "verdict": "allow", "name": fmt.Sprintf("n%d.example", i)}})
		}
	}
	b.waitFor(t, "the stream", `document.getElementById("conn") && document.getElementById("conn").textContent === "live"`, 10*time.Second)
	publish(0, 1)
	b.waitFor(t, "a record streamed after the token left the address", `document.getElementById("flows-body").rows.length === 1`, 5*time.Second)
	var page struct {
		Href, Bidi, BidiSpan string
	}
	b.eval(t, `({href: location.href, bidi: getComputedStyle(document.querySelector("#flows-body td.c-host")).unicodeBidi,
		bidiSpan: getComputedStyle(document.querySelector("#flows-body td.c-verdict span")).unicodeBidi})`, &page)
	if strings.Contains(page.Href, s.token) || strings.Contains(page.Href, "token") {
		t.Errorf("the address still holds the token: %s", page.Href)
	}
	if page.Bidi != "isolate" || page.BidiSpan != "isolate" {
		t.Errorf("a cell's unicode-bidi is %q, its span's %q; want isolate", page.Bidi, page.BidiSpan)
	}

	const flood = 20000
	b.key(t, "p")
	began := time.Now()
	publish(1, flood+1)
	b.waitFor(t, "the flood held", `state.held === `+fmt.Sprint(flood), 20*time.Second)
	var held struct{ Pending, Max, Dropped int }
	b.eval(t, `({pending: state.pending.length, max: MAX_ROWS, dropped: state.dropped})`, &held)
	if held.Pending > 2*held.Max || held.Dropped < flood-2*held.Max {
		t.Errorf("paused with %d records held (%d dropped), want at most %d", held.Pending, held.Dropped, 2*held.Max)
	}
	b.key(t, "p")
	b.waitFor(t, "the newest shown", fmt.Sprintf(`document.getElementById("flows-body").rows[0].innerText.includes("n%d.example")`, flood), 5*time.Second)
	var shown struct {
		Rows  int
		Count string
	}
	b.eval(t, `({rows: document.getElementById("flows-body").rows.length, count: document.getElementById("count").textContent})`, &shown)
	if shown.Rows != held.Max || !strings.Contains(shown.Count, "not shown") {
		t.Errorf("after the flood: %d rows, count %q", shown.Rows, shown.Count)
	}
	t.Logf("%d records while paused, shown in %s", flood, time.Since(began).Round(time.Millisecond))
	b.mu.Lock()
	defer b.mu.Unlock()
	for _, p := range b.problems {
		t.Errorf("the page reported: %s", p)
	}
}

// A stream the server refuses for good (too many pages, or a new token)
// is not "reconnecting" forever: the page says so, and reconnects when
// asked, with the token it kept.
func TestAStreamRefusedForGoodSaysSo(t *testing.T) {
	home(t)
	s := start(t, Options{maxSubs: 1})
	other := openStream(t, s)
	b := openPage(t, s)
	b.waitFor(t, "the refusal said", `document.getElementById("reconnect") && document.getElementById("conn").textContent.includes("stopped") && !document.getElementById("reconnect").hidden`, 10*time.Second)
	other.resp.Body.Close()
	for deadline := time.Now().Add(2 * time.Second); s.feed.clients() != 0; time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("the other page's place was not freed")
		}
	}
	b.eval(t, `document.getElementById("reconnect").click()`, nil)
	b.waitFor(t, "live again", `document.getElementById("conn").textContent === "live" && document.getElementById("reconnect").hidden`, 5*time.Second)
}

// The process behind a flow (its exec, pid and command line, as the
// guest's agent named them) and what an API call cost show in the flows
// table, and a task's tokens and cost in the tasks table: the columns
// appear only once a record has them.
func TestTheProcessAndTheSpendBehindARecordShow(t *testing.T) {
	p := home(t)
	now := time.Now()
	writeRecords(t, p,
		&audit.Record{Time: now.Add(-time.Minute), Kind: audit.KindTCP, Verdict: audit.Allow, Name: "pypi.org", Dst: "151.101.0.223:443", Rule: "default"},
	)
	s := start(t, Options{})
	b := openPage(t, s)
	b.waitFor(t, "the backlog", `document.querySelectorAll("#flows-body tr").length === 1 && document.getElementById("conn").textContent === "live"`, 10*time.Second)
	var head string
	b.eval(t, `document.getElementById("flows-head").innerText`, &head)
	for _, col := range []string{"Exec", "PID", "Command", "Tokens", "Cost"} {
		if strings.Contains(head, col) {
			t.Errorf("column %s shows before any record has it: %q", col, head)
		}
	}

	writeRecords(t, p,
		&audit.Record{Time: now.Add(-50 * time.Second), Kind: audit.KindTCP, Verdict: audit.Allow, Name: "files.pythonhosted.org", Dst: "151.101.1.63:443", Rule: "default",
			Owner: &audit.Owner{Exec: "0123456789abcdef", PID: 4242, UID: 1000, Comm: "pip", Cmd: "pip install requests", ClaimedBy: audit.ClaimedByGuest}},
		&audit.Record{Time: now.Add(-40 * time.Second), Kind: audit.KindRelay, Verdict: audit.Allow, Name: "api.anthropic.com", Session: "s1", Method: "POST", URL: "/v1/messages", Status: 200,
			Usage: &audit.Usage{Model: "claude-sonnet-4-5", InputTokens: 1200, OutputTokens: 350, CostUSD: 0.0166}},
	)
	b.waitFor(t, "the new records", `document.querySelectorAll("#flows-body tr").length === 3`, 5*time.Second)
	b.waitFor(t, "the task's spend", `document.getElementById("tasks-body").innerText.includes("session s1")`, 5*time.Second)
	var got struct{ Head, Flow, Call, Tasks, TasksHead string }
	b.eval(t, `(() => {
		const rows = Array.from(document.getElementById("flows-body").rows);
		const row = (s) => (rows.find((r) => r.innerText.includes(s)) || {innerText: ""}).innerText;
		return {head: document.getElementById("flows-head").innerText, flow: row("files.pythonhosted.org"), call: row("api.anthropic.com"),
			tasks: document.getElementById("tasks-body").innerText, tasksHead: document.getElementById("tasks-head").innerText};
	})()`, &got)
	for _, col := range []string{"Exec", "PID", "Command", "Tokens", "Cost"} {
		if !strings.Contains(got.Head, col) {
			t.Errorf("the flows table has no %s column: %q", col, got.Head)
		}
	}
	for _, want := range []string{"0123456789abcdef", "4242", "pip install requests"} {
		if !strings.Contains(got.Flow, want) {
			t.Errorf("the flow's row lacks %q: %q", want, got.Flow)
		}
	}
	for _, want := range []string{"1,550", "$0.0166"} {
		if !strings.Contains(got.Call, want) {
			t.Errorf("the API call's row lacks %q: %q", want, got.Call)
		}
		if !strings.Contains(got.Tasks, want) {
			t.Errorf("the task's row lacks %q: %q (head %q)", want, got.Tasks, got.TasksHead)
		}
	}
}
