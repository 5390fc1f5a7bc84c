package claudecode

import (
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/coworkhq/cowork/internal/fakeapi"
)

// claudeBin is the pinned Claude Code make test installs.
func claudeBin(t *testing.T) string {
	t.Helper()
	bin := os.Getenv("COWORK_CLAUDE")
	if bin == "" {
		if os.Getenv("COWORK_TEST_REQUIRE_TOOLS") != "" {
			t.Fatal("COWORK_CLAUDE is not set (make test installs Claude Code from npm)")
		}
		t.Skip("Claude Code not installed; make test installs it")
	}
	return bin
}

// The real Claude Code, talking to the fake Messages API, runs a tool and
// answers; everything it prints decodes, and the API saw what cowork passed.
func TestDecodesTheRealClaudeCode(t *testing.T) {
	bin := claudeBin(t)
	api := fakeapi.New(
		fakeapi.Reply{Tool: "Bash", Input: map[string]any{"command": "echo made > made.txt && echo ran", "description": "make a file"}},
		fakeapi.Reply{Text: "The file is there."},
	)
	srv := httptest.NewServer(api)
	defer srv.Close()
	dir := t.TempDir()
	c := exec.Command(bin, "-p", "--output-format", "stream-json", "--verbose", "--include-partial-messages",
		"--dangerously-skip-permissions", "--model", "claude-test-1", "--append-system-prompt", "SYSTEM-MARK")
	c.Dir = dir
	c.Env = append(os.Environ(), "HOME="+dir, "ANTHROPIC_BASE_URL="+srv.URL, "ANTHROPIC_API_KEY=sk-test-key",
		"DISABLE_TELEMETRY=1", "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC=1", "DISABLE_AUTOUPDATER=1",
		"IS_SANDBOX=1") // tests may run as root, where claude refuses to skip permissions otherwise
	c.Stdin = strings.NewReader("make a file")
	var stderr strings.Builder
	c.Stderr = &stderr
	out, err := c.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Start(); err != nil {
		t.Fatal(err)
	}
	var events []*Event
	decodeErr := Decode(out, func(e *Event) error { events = append(events, e); return nil })
	if err := c.Wait(); err != nil || decodeErr != nil {
		t.Fatalf("claude: %v, decode: %v\nstderr: %s", err, decodeErr, stderr.String())
	}

	var sawInit, sawDelta, sawToolUse, sawToolResult bool
	var result *Event
	for _, e := range events {
		switch {
		case e.Type == "system" && e.Subtype == "init":
			sawInit = e.Model == "claude-test-1" && e.SessionID != ""
		case e.Type == "stream_event" && e.Event != nil && e.Event.Delta != nil && e.Event.Delta.Type == "text_delta":
			sawDelta = true
		case e.Type == "assistant" && e.Message != nil:
			for _, b := range e.Message.Content {
				sawToolUse = sawToolUse || (b.Type == "tool_use" && b.Name == "Bash")
			}
		case e.Type == "user" && e.Message != nil:
			for _, b := range e.Message.Content {
				sawToolResult = sawToolResult || (b.Type == "tool_result" && !b.IsError && strings.Contains(b.ResultText(), "ran"))
			}
		case e.Type == "result":
			result = e
		}
	}
	if !sawInit || !sawDelta || !sawToolUse || !sawToolResult {
		t.Errorf("init %v, text delta %v, Bash tool_use %v, its result %v", sawInit, sawDelta, sawToolUse, sawToolResult)
	}
	if result == nil || result.IsError || result.Result != "The file is there." || result.NumTurns != 2 || result.SessionID == "" {
		t.Errorf("result: %+v", result)
	}
	if b, err := os.ReadFile(filepath.Join(dir, "made.txt")); err != nil || string(b) != "made\n" {
		t.Errorf("the tool's file: %q, %v", b, err)
	}

	reqs := api.Requests()
	if len(reqs) != 2 {
		t.Fatalf("the API got %d requests, want 2", len(reqs))
	}
	for _, r := range reqs {
		if r.Path != "/v1/messages" || r.Header.Get("x-api-key") != "sk-test-key" || r.Body["model"] != "claude-test-1" ||
			!strings.Contains(string(r.Raw), "SYSTEM-MARK") {
			t.Errorf("request %s %s key %q model %v, system prompt marked %v", r.Method, r.Path,
				r.Header.Get("x-api-key"), r.Body["model"], strings.Contains(string(r.Raw), "SYSTEM-MARK"))
		}
	}
	// The second call carries the tool's output back.
	if !strings.Contains(string(reqs[1].Raw), "tool_result") || !strings.Contains(string(reqs[1].Raw), "ran") {
		t.Errorf("the second request does not carry the tool result: %.300s", reqs[1].Raw)
	}
}

// An unknown --resume session makes the real Claude Code fail at once,
// before any request, with a result that says so in its errors and no
// turn: what `cowork ask` shows (see testdata/unknown-session.jsonl).
func TestTheRealClaudeCodeRefusesAnUnknownSession(t *testing.T) {
	bin := claudeBin(t)
	api := fakeapi.New(fakeapi.Reply{Text: "must not be asked"})
	srv := httptest.NewServer(api)
	defer srv.Close()
	dir := t.TempDir()
	const unknown = "3f2c1a7e-1111-4222-8333-944445555666"
	c := exec.Command(bin, "-p", "--output-format", "stream-json", "--verbose", "--include-partial-messages",
		"--dangerously-skip-permissions", "--resume", unknown)
	c.Dir = dir
	c.Env = append(os.Environ(), "HOME="+dir, "ANTHROPIC_BASE_URL="+srv.URL, "ANTHROPIC_API_KEY=sk-test-key",
		"DISABLE_TELEMETRY=1", "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC=1", "DISABLE_AUTOUPDATER=1", "IS_SANDBOX=1")
	c.Stdin = strings.NewReader("go on")
	var stderr strings.Builder
	c.Stderr = &stderr
	out, err := c.Output()
	if err == nil {
		t.Errorf("claude --resume %s exited 0", unknown)
	}
	var result *Event
	if err := Decode(strings.NewReader(string(out)), func(e *Event) error {
		if e.Type == "result" {
			result = e
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if result == nil || !result.IsError || result.NumTurns != 0 || len(result.Errors) == 0 ||
		result.Errors[0] != "No conversation found with session ID: "+unknown {
		t.Fatalf("result %+v\nstderr: %s", result, stderr.String())
	}
	if n := len(api.Requests()); n != 0 {
		t.Errorf("the API got %d requests", n)
	}
}
