//go:build e2e

package e2e

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/coworkhq/cowork/internal/fakeapi"
)

// TestAskRunsClaudeCodeInTheGuest runs the real Claude Code (the pinned
// native binary the test guest carries) in the guest against a fake
// Messages API on the host's loopback, reached only through the credential
// relay.
func TestAskRunsClaudeCodeInTheGuest(t *testing.T) {
	api := fakeapi.New()
	srv := httptest.NewServer(api)
	defer srv.Close()
	b := make([]byte, 16)
	rand.Read(b)
	key := "sk-ant-e2e-" + hex.EncodeToString(b)

	e := newEnv(t)
	e.extraEnv = []string{"ANTHROPIC_BASE_URL=" + srv.URL, "ANTHROPIC_API_KEY=" + key, "ANTHROPIC_AUTH_TOKEN=",
		"DISABLE_TELEMETRY=1", "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC=1"}
	e.must(e.initArgs()...)
	// A Claude Code setting on the host reaches claude in the guest; --model,
	// where given, wins over it.
	const envModel = "claude-e2e-env-model"
	e.extraEnv = append(e.extraEnv, "ANTHROPIC_MODEL="+envModel)
	// newRequests returns the requests since the last call, less Claude
	// Code's retries of a request (its answer broke off; the fake answers a
	// retry as before), which are logged for the record.
	seen := 0
	newRequests := func() []fakeapi.Request {
		all := api.Requests()
		var fresh []fakeapi.Request
		for _, req := range all[seen:] {
			if req.Repeat {
				logRequest(t, "a retried request", req)
				continue
			}
			fresh = append(fresh, req)
		}
		seen = len(all)
		return fresh
	}

	t.Run("answers with a footer", func(t *testing.T) {
		// The first claude of a fresh guest may send one request more (see
		// conversation), so the answer is scripted twice and the spare dropped.
		api.Script(fakeapi.Reply{Text: "Hello from the fake model."}, fakeapi.Reply{Text: "Hello from the fake model."})
		r := e.must("ask", "say hi")
		api.Drop()
		if !strings.Contains(r.out, "Hello from the fake model.") {
			t.Errorf("the answer is not on stdout: %s", r)
		}
		if !regexp.MustCompile(`1 turn · \$[0-9.]+ · session [0-9a-f-]{36}`).MatchString(r.errOut) {
			t.Errorf("no footer with turns, cost and session on stderr: %s", r)
		}
		reqs := newRequests()
		conv := conversation(t, reqs, "say hi")
		// The relay put the real key on every request; the guest never had it.
		for i, req := range reqs {
			if got := req.Header.Get("x-api-key"); got != key {
				t.Errorf("request %d reached the API with key %q, want the host's", i, got)
			}
		}
		if conv.Body["model"] != envModel {
			t.Errorf("the host's ANTHROPIC_MODEL did not reach claude: model %v", conv.Body["model"])
		}
	})

	t.Run("tools and flags in a project, the key never in the guest", func(t *testing.T) {
		// The tool writes a note, shows where and as whom it ran and claude's
		// argv, and saves every process's environment and command line while
		// claude runs (as root, through sudo, to read them all); the host then
		// greps that and the guest's filesystem for the key.
		api.Script(
			fakeapi.Reply{Tool: "Bash", Input: map[string]any{"command": "curl -sS --max-time 5 --noproxy '*' -o /dev/null http://169.254.169.254:8009/ 2>/dev/null; " +
				"echo from-claude > note.txt && pwd && id -un && " +
				"ps -eo args | grep -F -e max-budget | grep -v grep; " +
				"sudo -n sh -c 'cat /proc/[0-9]*/environ /proc/[0-9]*/cmdline' 2>/dev/null | tr '\\0' '\\n' > /tmp/procs.txt", "description": "make a note"}},
			fakeapi.Reply{Text: "Wrote note.txt."},
		)
		// One run for every flag: each claude start is slow in an emulated guest.
		r := e.must("ask", "--project", "demo", "--model", "claude-e2e-model", "--max-budget-usd", "5",
			"--system-prompt", "E2E-SYSTEM-MARK", "--allowed-tools", "Bash", "--", "make a note")
		if b, err := os.ReadFile(filepath.Join(e.workspace, "demo", "note.txt")); err != nil || string(b) != "from-claude\n" {
			t.Fatalf("note.txt on the host: %q, %v\n%s", b, err, r)
		}
		if !strings.Contains(r.out, "Bash") || !strings.Contains(r.out, "Wrote note.txt.") {
			t.Errorf("the tool call and answer are not shown: %s", r)
		}
		reqs := newRequests()
		if len(reqs) != 2 {
			t.Fatalf("the API got %d requests, want 2: %s", len(reqs), r)
		}
		// --model wins over the host's ANTHROPIC_MODEL; --system-prompt is
		// the request's system field.
		system, _ := json.Marshal(reqs[0].Body["system"])
		if reqs[0].Body["model"] != "claude-e2e-model" || !strings.Contains(string(system), "E2E-SYSTEM-MARK") {
			t.Errorf("model %v (want claude-e2e-model), system %.300s", reqs[0].Body["model"], system)
		}
		raw := string(reqs[1].Raw)
		if !strings.Contains(raw, `/workspace/demo\ncowork`) {
			t.Errorf("the tool did not run in /workspace/demo as cowork: %.400s", raw)
		}
		if !strings.Contains(raw, "--max-budget-usd 5") || !strings.Contains(raw, "--allowed-tools Bash") ||
			!strings.Contains(raw, "--dangerously-skip-permissions") {
			t.Errorf("claude's argv in the guest lacks the flags: %.800s", raw)
		}

		if r := e.must("exec", "grep -c '^ANTHROPIC_API_KEY=' /tmp/procs.txt"); strings.TrimSpace(r.out) == "0" {
			t.Fatalf("the snapshot holds no claude environment: %s", r)
		}
		if r := e.must("exec", "grep -c '^SUDO_USER=cowork$' /tmp/procs.txt"); strings.TrimSpace(r.out) == "0" {
			t.Fatalf("the snapshot was not taken as root, so it misses other users' processes: %s", r)
		}
		searchGuestFor(t, e, key)

		// The tool's refused connection is the ask's, and was opened while
		// its Bash call ran; proxy --ask finds it and the ask's API calls.
		_, id, _ := strings.Cut(r.errOut, "(cowork proxy --ask ")
		id, _, _ = strings.Cut(id, ")")
		if len(id) != 16 || !strings.Contains(r.errOut, "cowork: network (as the guest reports): ") ||
			!regexp.MustCompile(`cowork: flows while a tool call ran \(as the guest reports\): Bash toolu_\S+ [1-9][0-9]* \([1-9][0-9]* denied\)`).MatchString(r.errOut) {
			t.Errorf("no network summary naming the ask, or no flows put on the Bash call: %s", r)
		}
		out := e.must("proxy", "--json", "--follow=false", "--since", "0", "--ask", id).out
		if !strings.Contains(out, `"dst":"169.254.169.254:8009"`) || !strings.Contains(out, `"kind":"relay"`) {
			t.Errorf("proxy --ask %s lacks the tool's refused flow or the ask's API calls:\n%s", id, out)
		}
		// The audit log holds the Bash call itself, under the ask's session.
		if !regexp.MustCompile(`"kind":"tool".*"session":"` + id + `".*"tool":\{"id":"toolu_[^"]+","name":"Bash","claimed_by":"guest"\}`).MatchString(out) {
			t.Errorf("proxy --ask %s lacks the ask's Bash call:\n%s", id, out)
		}
		// The API calls name claude, the process behind them, in the exec
		// named after the ask.
		if !regexp.MustCompile(`"kind":"relay".*"owner":\{"exec":"` + id + `","pid":[1-9]`).MatchString(out) {
			t.Errorf("no API call of ask %s names claude's process:\n%s", id, out)
		}
	})

	t.Run("-c continues, -p PROJECT still works", func(t *testing.T) {
		api.Script(fakeapi.Reply{Text: "Continuing."})
		r := e.must("ask", "-c", "-p", "demo", "and again")
		if !strings.Contains(r.errOut, "--project demo") || !strings.Contains(r.out, "Continuing.") {
			t.Errorf("want a deprecation hint and the answer: %s", r)
		}
		reqs := newRequests()
		if len(reqs) != 1 || !strings.Contains(string(reqs[0].Raw), "make a note") || !strings.Contains(string(reqs[0].Raw), "and again") {
			t.Errorf("the continued conversation does not carry the earlier turn: %.600s", reqs[len(reqs)-1].Raw)
		}
	})

	// The relay counts the first answer (120 tokens) and refuses the
	// request that follows the tool call with a 402 Claude Code shows at
	// once and does not retry; the audit and cowork usage say why.
	t.Run("a spend budget stops the task", func(t *testing.T) {
		api.Script(
			fakeapi.Reply{Tool: "Bash", Input: map[string]any{"command": "echo spent", "description": "spend"}},
			fakeapi.Reply{Text: "Never sent."},
		)
		r := e.run("ask", "--max-tokens-total", "100", "--", "spend it")
		api.Drop()
		if r.code == 0 || !strings.Contains(r.out+r.errOut, "the budget of 100 tokens for this ask is reached") {
			t.Errorf("ask past its budget: %s", r)
		}
		if reqs := newRequests(); len(reqs) != 1 {
			t.Errorf("the API got %d requests, want the first alone", len(reqs))
		}
		if _, ok := find(e.auditLines(t), func(a auditLine) bool {
			return a.Kind == "relay" && a.Verdict == "deny" && a.Rule == "relay: budget reached" && a.Status == 402
		}); !ok {
			t.Error("no audit record of the refusal")
		}
		var u struct {
			Sessions []struct {
				What     string `json:"what"`
				Requests int64  `json:"requests"`
				Refused  int64  `json:"refused"`
				Stopped  string `json:"stopped"`
			} `json:"sessions"`
		}
		out := e.must("usage", "--json").out
		if err := json.Unmarshal([]byte(out), &u); err != nil || len(u.Sessions) == 0 {
			t.Fatalf("cowork usage --json: %v\n%s", err, out)
		}
		last := u.Sessions[len(u.Sessions)-1]
		if last.What != "ask" || last.Requests != 1 || last.Refused < 1 || !strings.Contains(last.Stopped, "budget of 100 tokens") {
			t.Errorf("the ask's usage: %+v", last)
		}
	})

	t.Run("sessions survive a restart", func(t *testing.T) {
		e.must("stop")
		e.must("start")
		// The first claude after a reboot may send one request more (see
		// conversation), so the answer is scripted twice and the spare dropped.
		api.Script(fakeapi.Reply{Text: "Still here."}, fakeapi.Reply{Text: "Still here."})
		r := e.must("ask", "--project", "demo", "-c", "after the restart")
		api.Drop()
		if !strings.Contains(r.out, "Still here.") {
			t.Errorf("no answer after the restart: %s", r)
		}
		conv := conversation(t, newRequests(), "after the restart")
		for _, turn := range []string{"make a note", "and again", "after the restart"} {
			if !strings.Contains(string(conv.Raw), turn) {
				t.Errorf("the conversation continued after the restart lacks %q: %.800s", turn, conv.Raw)
			}
		}
	})

	t.Run("the Go API example", func(t *testing.T) {
		exe := filepath.Join(t.TempDir(), "ask")
		if out, err := exec.Command("go", "build", "-o", exe, "../examples/ask").CombinedOutput(); err != nil {
			t.Fatalf("build examples/ask: %v\n%s", err, out)
		}
		api.Script(
			fakeapi.Reply{Tool: "Bash", Input: map[string]any{"command": "echo through-the-api > api.txt", "description": "write"}},
			fakeapi.Reply{Text: "Done through the API."},
		)
		c := exec.Command(exe, "-project", "api", "use the api")
		c.Env = append(append(os.Environ(), "COWORK_HOME="+e.home), e.extraEnv...)
		var stderr strings.Builder
		c.Stderr = &stderr
		out, err := c.Output()
		if err != nil {
			t.Fatalf("examples/ask: %v\nstdout: %s\nstderr: %s", err, out, stderr.String())
		}
		if !strings.Contains(stderr.String(), "sandbox is running: Linux") {
			t.Errorf("no status and uname line: %s", stderr.String())
		}
		if !regexp.MustCompile(`\[Bash map\[command:echo through-the-api`).Match(out) || !strings.Contains(string(out), "Done through the API.") ||
			!strings.Contains(string(out), "[2 turns, $") {
			t.Errorf("the events did not arrive: %s", out)
		}
		if b, err := os.ReadFile(filepath.Join(e.workspace, "api", "api.txt")); err != nil || string(b) != "through-the-api\n" {
			t.Errorf("api/api.txt on the host: %q, %v", b, err)
		}
		newRequests()
	})

	t.Run("Ctrl-C stops claude in the guest", func(t *testing.T) {
		api.Script(fakeapi.Reply{Tool: "Bash", Input: map[string]any{"command": "touch /tmp/tool-started; sleep 600", "description": "wait"}})
		ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
		defer cancel()
		c := e.cmd(ctx, "ask", "wait for a long time")
		var out, errOut strings.Builder
		c.Stdout, c.Stderr = &out, &errOut
		if err := c.Start(); err != nil {
			t.Fatal(err)
		}
		done := make(chan error, 1)
		go func() { done <- c.Wait() }()
		for e.run("exec", "test -e /tmp/tool-started").code != 0 {
			select {
			case err := <-done:
				t.Fatalf("ask ended before its tool ran: %v\n%s\n%s", err, out.String(), errOut.String())
			case <-time.After(2 * time.Second):
			}
		}
		c.Process.Signal(os.Interrupt)
		var err error
		want := 130 // claude stops at the first Ctrl-C, and ask says it was interrupted
		select {
		case err = <-done:
		case <-time.After(20 * time.Second):
			want = 137
			c.Process.Signal(os.Interrupt) // the second one kills claude
			select {
			case err = <-done:
			case <-time.After(20 * time.Second):
				t.Fatalf("ask still runs after two Ctrl-C: %s", errOut.String())
			}
		}
		if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != want {
			t.Errorf("ask after Ctrl-C: %v, want exit %d\n%s", err, want, errOut.String())
		}
		if want == 130 && !strings.Contains(errOut.String(), "error: interrupted") {
			t.Errorf("the footer does not say it was interrupted: %s", errOut.String())
		}
		// Neither claude nor its tool's process lingers in the guest. The
		// agent ends what is left of the session (SIGHUP, then SIGKILL
		// after a grace period); an emulated guest on a busy host (CI
		// runs fresh-root beside the suite) takes a while to show it.
		var left result
		for range 40 {
			if left = e.run("exec", "pgrep -a -f 'slee[p] 600' || pgrep -a -x claude"); left.code == 1 {
				break
			}
			time.Sleep(time.Second)
		}
		if left.code != 1 {
			t.Errorf("processes left in the guest: %s", left)
		}
		newRequests()
	})

	t.Run("a killed ask takes its key with it", func(t *testing.T) {
		api.Script(fakeapi.Reply{Tool: "Bash", Input: map[string]any{"command": "touch /tmp/kill-tool-started; sleep 600", "description": "wait"}})
		ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
		defer cancel()
		c := e.cmd(ctx, "ask", "wait to be killed")
		var out, errOut strings.Builder
		c.Stdout, c.Stderr = &out, &errOut
		if err := c.Start(); err != nil {
			t.Fatal(err)
		}
		done := make(chan error, 1)
		go func() { done <- c.Wait() }()
		for e.run("exec", "test -e /tmp/kill-tool-started").code != 0 {
			select {
			case err := <-done:
				t.Fatalf("ask ended before its tool ran: %v\n%s\n%s", err, out.String(), errOut.String())
			case <-time.After(2 * time.Second):
			}
		}
		// What a hostile guest keeps: the placeholder and the relay's
		// address, read as root from claude's environment.
		r := e.must("exec", "-u", "root", `tr '\0' '\n' < /proc/$(pgrep -o -x claude)/environ | grep -E '^ANTHROPIC_(API_KEY|BASE_URL)='`)
		var placeholder, base string
		for _, l := range strings.Fields(r.out) {
			if v, ok := strings.CutPrefix(l, "ANTHROPIC_API_KEY="); ok {
				placeholder = v
			}
			if v, ok := strings.CutPrefix(l, "ANTHROPIC_BASE_URL="); ok {
				base = v
			}
		}
		if !strings.HasPrefix(placeholder, "cowork-session-") || base == "" {
			t.Fatalf("claude's environment holds no placeholder and relay address: %s", r)
		}
		reuse := func() string {
			return e.run("exec", fmt.Sprintf("curl -sS --noproxy '*' --max-time 20 -o /dev/null -w '%%{http_code}' "+
				"-X POST -H 'x-api-key: %s' -H 'content-type: application/json' -d '{}' %s/v1/messages/count_tokens", placeholder, base)).out
		}
		if got := reuse(); got != "200" {
			t.Fatalf("the placeholder does not work while ask runs: %q", got)
		}
		if err := c.Process.Kill(); err != nil { // SIGKILL: ask closes nothing itself
			t.Fatal(err)
		}
		<-done
		// hostd ends the session as the killed ask's connection closes.
		deadline := time.Now().Add(2 * time.Minute)
		for got := reuse(); got != "401"; got = reuse() {
			if time.Now().After(deadline) {
				t.Fatalf("the placeholder still gets %q two minutes after ask was killed", got)
			}
			time.Sleep(time.Second)
		}
		audit := e.must("proxy", "--json", "--follow=false", "--since", "0")
		found := false
		for _, l := range strings.Split(strings.TrimSpace(audit.out), "\n") {
			var a struct {
				Kind, Verdict, Rule, Method, URL, Session string
				Status                                    int
			}
			if json.Unmarshal([]byte(l), &a) != nil || a.Kind != "relay" || a.Verdict != "deny" {
				continue
			}
			if a.Rule == "relay: ended session" && a.Status == 401 && a.URL == "/v1/messages/count_tokens" && a.Session != "" {
				found = true
			}
			// Every call the real Claude Code made in this test's runs is
			// one the relay forwards.
			if a.Rule == "relay: not an API call Claude Code makes" {
				t.Errorf("the relay refused a call of Claude Code's: %s %s", a.Method, a.URL)
			}
		}
		if !found {
			t.Errorf("no audit line says the placeholder's session ended:\n%s", audit.out)
		}
		e.run("exec", "-u", "root", "pkill -x claude; pkill -f 'slee[p] 600'; rm -f /tmp/kill-tool-started")
		newRequests()
	})

	t.Run("ask --rm runs in a throwaway clone", func(t *testing.T) {
		// The instance stopped and without snapshots: the run takes one,
		// base, and clones it; the clone has its own relay, the key its
		// host's all the same, and its records outlive it.
		e.must("stop")
		api.Script(fakeapi.Reply{Text: "Hello from a throwaway."}, fakeapi.Reply{Text: "Hello from a throwaway."})
		r := e.must("ask", "--rm", "say hi from the clone")
		api.Drop()
		if !strings.Contains(r.out, "Hello from a throwaway.") || !strings.Contains(r.errOut, "took snapshot base") || !strings.Contains(r.errOut, "(cold, from snapshot base") {
			t.Errorf("ask --rm: %s", r)
		}
		for i, req := range newRequests() {
			if got := req.Header.Get("x-api-key"); got != key {
				t.Errorf("request %d from the clone reached the API with key %q", i, got)
			}
		}
		var relayed, runs int
		for _, l := range strings.Split(e.must("proxy", "--runs", "--json", "--follow=false", "--since", "0").out, "\n") {
			var a struct {
				Kind string `json:"kind"`
				Run  *struct {
					What     string `json:"what"`
					ExitCode int    `json:"exit_code"`
				} `json:"run_info"`
			}
			if json.Unmarshal([]byte(l), &a) != nil {
				continue
			}
			if a.Kind == "relay" {
				relayed++
			}
			if a.Kind == "run" && a.Run != nil && a.Run.What == "ask" && a.Run.ExitCode == 0 {
				runs++
			}
		}
		if relayed == 0 || runs != 1 {
			t.Errorf("runs.jsonl: %d relay records, %d ask runs; want some and 1", relayed, runs)
		}
		if left, _ := filepath.Glob(filepath.Join(e.home, "sandbox-rm-*")); len(left) != 0 {
			t.Errorf("the clone is left: %q", left)
		}
	})

	t.Run("fleet ask runs each task in a clone of its own", func(t *testing.T) {
		// Two tasks at once, from the base snapshot the run above took:
		// each in its own clone and project, its answer in its file and in
		// the JSON results, both clones gone after.
		api.Script(fakeapi.Reply{Text: "Hello from the fleet."}, fakeapi.Reply{Text: "Hello from the fleet."},
			fakeapi.Reply{Text: "Hello from the fleet."}, fakeapi.Reply{Text: "Hello from the fleet."})
		dir := t.TempDir()
		tasks := filepath.Join(dir, "tasks")
		os.WriteFile(tasks, []byte("# two at once\n{\"id\":\"left\",\"prompt\":\"say hi from the left\",\"project\":\"fleet-l\"}\nsay hi from the right\n"), 0o600)
		out := filepath.Join(dir, "out")
		r := e.must("fleet", "ask", "--tasks", tasks, "--parallel", "2", "--out", out, "--json")
		api.Drop()
		var results []struct {
			ID       string `json:"id"`
			ExitCode int    `json:"exit_code"`
			RunID    string `json:"run_id"`
			Clone    string `json:"clone"`
			Output   string `json:"output"`
		}
		if err := json.Unmarshal([]byte(r.out), &results); err != nil || len(results) != 2 {
			t.Fatalf("fleet ask --json: %v\n%s", err, r)
		}
		for _, res := range results {
			b, _ := os.ReadFile(filepath.Join(out, res.ID+".out"))
			if res.ExitCode != 0 || res.RunID == "" || !strings.Contains(res.Output, "Hello from the fleet.") || string(b) != res.Output {
				t.Errorf("task %s: %+v; its file holds %q\n%s", res.ID, res, b, r)
			}
		}
		if results[0].ID != "left" || results[1].ID != "3" || results[0].Clone == results[1].Clone {
			t.Errorf("tasks %+v, want left and 3 in clones of their own", results)
		}
		if _, err := os.Stat(filepath.Join(e.workspace, "fleet-l")); err != nil {
			t.Errorf("task left's project folder: %v", err)
		}
		for i, req := range newRequests() {
			if got := req.Header.Get("x-api-key"); got != key {
				t.Errorf("request %d from the fleet reached the API with key %q", i, got)
			}
		}
		if left, _ := filepath.Glob(filepath.Join(e.home, "sandbox-rm-*")); len(left) != 0 {
			t.Errorf("the fleet's clones are left: %q", left)
		}
		// A second fleet into the same folder is refused before it runs.
		if r := e.run("fleet", "ask", "--tasks", tasks, "--out", out); r.code != 2 || !strings.Contains(r.errOut, "is there already") {
			t.Errorf("a fleet over an earlier one's files: %s", r)
		}
	})
}

// conversation returns the last Messages request that carries turn.
// Claude Code's retries are already left out (see newRequests). Its first
// run after a boot has now and then sent a second request with the whole
// conversation all the same (on a fresh guest and after a reboot); that is
// tolerated, and every request is then logged for the next look.
func conversation(t *testing.T, reqs []fakeapi.Request, turn string) fakeapi.Request {
	t.Helper()
	var conv []fakeapi.Request
	for _, req := range reqs {
		if req.Method == http.MethodPost && req.Path == "/v1/messages" && strings.Contains(string(req.Raw), turn) {
			conv = append(conv, req)
		}
	}
	if len(conv) != 1 || len(reqs) != 1 {
		for i, req := range reqs {
			logRequest(t, fmt.Sprintf("request %d", i), req)
		}
	}
	if len(conv) == 0 {
		t.Fatalf("no request to the API carries %q (%d requests)", turn, len(reqs))
	}
	if len(conv) > 2 {
		t.Errorf("%d requests carry %q, want one (or two on a first run)", len(conv), turn)
	}
	return conv[len(conv)-1]
}

// logRequest logs what tells a retry, a fallback and a side request apart.
func logRequest(t *testing.T, what string, req fakeapi.Request) {
	t.Helper()
	msgs, _ := req.Body["messages"].([]any)
	t.Logf("%s: %s %s stream=%v max_tokens=%v messages=%d retry=%q at %s: %.300s", what, req.Method, req.Path,
		req.Body["stream"], req.Body["max_tokens"], len(msgs), req.Header.Get("X-Stainless-Retry-Count"),
		req.Received.Format("15:04:05.000"), req.Raw)
}

// searchGuestFor greps every file of the guest (each mounted filesystem but
// the kernel's pseudo ones; the ISO devices too, for the cidata) for the
// key. The key and a canary travel only on the search's stdin; the canary,
// written to the root filesystem, /run and the shared workspace, proves the
// search reaches them. Skipped: /proc, /sys, /dev's device nodes (a tmpfs
// such as /dev/shm is searched), and, by exact path, the two binaries the
// image installed (grep reads 200 MB of claude slowly under emulation;
// nothing writes them at run time).
func searchGuestFor(t *testing.T, e *env, key string) {
	t.Helper()
	b := make([]byte, 16)
	rand.Read(b)
	canary := "e2e-canary-" + hex.EncodeToString(b)
	host := filepath.Join(e.workspace, "e2e-canary")
	if err := os.WriteFile(host, []byte(canary+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	defer os.Remove(host)
	const script = `set -u
read -r k; read -r c
command -v findmnt >/dev/null || { echo "no findmnt in the guest" >&2; exit 3; }
printf '%s\n' "$c" > /var/tmp/e2e-canary; printf '%s\n' "$c" > /run/e2e-canary
pseudo='^(proc|sysfs|devtmpfs|devpts|cgroup2?|securityfs|pstore|bpf|debugfs|tracefs|configfs|fusectl|mqueue|hugetlbfs|autofs|binfmt_misc|efivarfs|nsfs|rpc_pipefs)$'
mounts=$(findmnt -rn -o TARGET,FSTYPE | awk -v p="$pseudo" '$2 !~ p && $1 !~ "^/(proc|sys)(/|$)" {print $1}')
find $mounts -xdev \( -path /proc -o -path /sys -o -path /dev -o -path /usr/local/bin/claude -o -path /usr/local/bin/cowork-agent \) -prune \
	-o -type f -print0 | xargs -0 -r -P 2 grep -lsF -D skip -e "$k" -e "$c"
for d in $(blkid -t TYPE=iso9660 -o device 2>/dev/null); do grep -qsF -e "$k" "$d" && echo "$d"; done
rm -f /var/tmp/e2e-canary /run/e2e-canary
true`
	r := e.runIn(key+"\n"+canary+"\n", "exec", "-u", "root", script)
	got := strings.Fields(r.out)
	slices.Sort(got)
	got = slices.Compact(got) // findmnt lists an over-mounted point twice
	want := []string{"/run/e2e-canary", "/var/tmp/e2e-canary", "/workspace/e2e-canary"}
	if r.code != 0 || !slices.Equal(got, want) {
		t.Errorf("the guest search found %q, want only the canaries %q: the key is in the guest, or the search missed a filesystem\n%s", got, want, r)
	}
}
