//go:build e2e

package e2e

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"net/url"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/coworkhq/cowork/internal/cdp"
)

// checkDashboard serves `cowork dashboard` for the running guest, loads
// it in headless Chromium, sees the flow of a guest's curl appear, and
// checks that every request the page made went to the dashboard itself.
func checkDashboard(t *testing.T, e *env, target string) {
	bin, err := exec.LookPath("chromium")
	if err != nil {
		t.Fatal("chromium is not installed: make test installs it (hack/deps.sh chromium), and CI runs it first")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	c := e.cmd(ctx, "dashboard", "--since", "10m")
	out, _ := c.StdoutPipe()
	if err := c.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { c.Process.Kill(); c.Wait() }()
	line, err := bufio.NewReader(out).ReadString('\n')
	if err != nil {
		t.Fatalf("cowork dashboard printed no URL: %v", err)
	}
	page, err := url.Parse(strings.TrimSpace(line))
	if err != nil || page.Hostname() != "127.0.0.1" || page.Query().Get("token") == "" {
		t.Fatalf("cowork dashboard printed %q", line)
	}

	var mu sync.Mutex
	var requests []string
	b, err := cdp.Launch(bin, t.TempDir(), func(ev cdp.Event) {
		if ev.Method == "Network.requestWillBeSent" {
			var p struct{ Request struct{ URL string } }
			json.Unmarshal(ev.Params, &p)
			mu.Lock()
			requests = append(requests, p.Request.URL)
			mu.Unlock()
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	session, err := b.Page(ctx, "about:blank")
	if err != nil {
		t.Fatalf("%v\n%s", err, b.Stderr())
	}
	for _, domain := range []string{"Network", "Runtime", "Page"} {
		if err := b.Call(ctx, session, domain+".enable", nil, nil); err != nil {
			t.Fatal(err)
		}
	}
	if err := b.Call(ctx, session, "Page.navigate", map[string]any{"url": page.String()}, nil); err != nil {
		t.Fatal(err)
	}
	waitFor := func(what, expr string) {
		t.Helper()
		deadline := time.Now().Add(30 * time.Second)
		for {
			var ok bool
			if err := b.Eval(ctx, session, "!!("+expr+")", &ok); err == nil && ok {
				return
			}
			if time.Now().After(deadline) {
				var text string
				b.Eval(ctx, session, "document.body.innerText", &text)
				t.Fatalf("%s: not within 30 s; the page says:\n%s", what, text)
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
	waitFor("the page live", `document.getElementById("conn").textContent === "live"`)
	probe := fmt.Sprintf("dashboard-probe-%d", time.Now().UnixNano())
	if r := e.run("exec", "curl -sS --max-time 20 -o /dev/null "+target+"?"+probe); r.code != 0 {
		t.Fatalf("the guest's curl: %s", r)
	}
	waitFor("the guest's request in the table", `document.getElementById("flows-body").innerText.includes("`+probe+`")`)

	mu.Lock()
	defer mu.Unlock()
	for _, r := range requests {
		ru, err := url.Parse(r)
		if err != nil || ru.Host != page.Host || ru.Query().Get("token") != page.Query().Get("token") {
			t.Errorf("the page asked for %q, not its dashboard %s", r, page.Host)
		}
	}
	if len(requests) < 2 {
		t.Errorf("only %d requests seen: %q", len(requests), requests)
	}
}
