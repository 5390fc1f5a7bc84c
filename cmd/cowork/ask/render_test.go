package ask

import (
	"bytes"
	"encoding/json"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/creack/pty"

	"github.com/coworkhq/cowork/cmd/cowork/iostreams"
	"github.com/coworkhq/cowork/hostd/claudecode"
	"github.com/coworkhq/cowork/internal/termsafe/termsafetest"
)

var update = flag.Bool("update", false, "rewrite the golden files")

// Recorded transcripts of the real Claude Code against the fake API render
// as the golden files say.
func TestRenderTranscripts(t *testing.T) {
	for _, name := range []string{"text", "tool-error", "interrupted", "unknown-session"} {
		t.Run(name, func(t *testing.T) {
			f, err := os.Open(filepath.Join("../../../hostd/claudecode/testdata", name+".jsonl"))
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			var out, errOut bytes.Buffer
			r := &Renderer{Out: &out, ErrOut: &errOut}
			if err := claudecode.Decode(f, func(e *claudecode.Event) error { r.Event(e); return nil }); err != nil {
				t.Fatal(err)
			}
			r.Finish(name == "interrupted") // a result came: Finish adds nothing
			// Interrupted, claude exits 0 but its result says it failed.
			if r.Failed() != (name == "interrupted" || name == "unknown-session") {
				t.Errorf("Failed() = %v", r.Failed())
			}
			got := "--- stdout\n" + out.String() + "--- stderr\n" + errOut.String()
			golden := filepath.Join("testdata", name+".golden")
			if *update {
				os.MkdirAll("testdata", 0o755)
				os.WriteFile(golden, []byte(got), 0o644)
			}
			want, err := os.ReadFile(golden)
			if err != nil {
				t.Fatal(err)
			}
			if got != string(want) {
				t.Fatalf("got:\n%s\nwant:\n%s", got, want)
			}
		})
	}
}

func TestColourOnlyWhenAsked(t *testing.T) {
	var out, errOut bytes.Buffer
	r := &Renderer{Out: &out, ErrOut: &errOut, Color: true}
	r.Event(&claudecode.Event{Type: "assistant", Message: &claudecode.Message{Content: []claudecode.Block{{Type: "tool_use", Name: "Read", Input: map[string]any{"file_path": "/x"}}}}})
	if !bytes.Contains(out.Bytes(), []byte("\x1b[")) {
		t.Fatal("no colour with Color set")
	}
	out.Reset()
	r.Color = false
	r.Event(&claudecode.Event{Type: "assistant", Message: &claudecode.Message{Content: []claudecode.Block{{Type: "tool_use", Name: "Read", Input: map[string]any{"file_path": "/x"}}}}})
	if bytes.Contains(out.Bytes(), []byte("\x1b[")) || out.String() != "● Read(/x)\n" {
		t.Fatalf("got %q", out.String())
	}
}

// Each stream gets colour only when it is a terminal and NO_COLOR is unset:
// `cowork ask x 2>log` keeps escapes out of the log.
func TestColourPerStream(t *testing.T) {
	t.Setenv("TERM", "xterm")
	_, tty, err := pty.Open()
	if err != nil {
		t.Skipf("no pseudo-terminal: %v", err)
	}
	defer tty.Close()
	file, err := os.Create(filepath.Join(t.TempDir(), "log"))
	if err != nil {
		t.Fatal(err)
	}
	defer file.Close()
	test, _, _, _ := iostreams.Test()
	for _, tc := range []struct {
		name              string
		ios               *iostreams.IOStreams
		noColor           bool
		wantOut, wantErrs bool
	}{
		{"both on a terminal", iostreams.FromFiles(tty, tty, tty), false, true, true},
		{"stderr to a file", iostreams.FromFiles(tty, tty, file), false, true, false},
		{"stdout to a file", iostreams.FromFiles(tty, file, tty), false, false, true},
		{"NO_COLOR", iostreams.FromFiles(tty, tty, tty), true, false, false},
		{"no terminal", test, false, false, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if tc.noColor {
				t.Setenv("NO_COLOR", "1")
			} else {
				t.Setenv("NO_COLOR", "")
				os.Unsetenv("NO_COLOR") // t.Setenv restores it afterwards
			}
			// The streams' kinds come from the files; the bytes go to buffers.
			var out, errOut bytes.Buffer
			ios := *tc.ios
			ios.Out, ios.ErrOut = &out, &errOut
			r := newRenderer(&ios)
			r.Event(&claudecode.Event{Type: "assistant", Message: &claudecode.Message{Content: []claudecode.Block{{Type: "tool_use", Name: "Read", Input: map[string]any{"file_path": "/x"}}}}})
			r.Event(&claudecode.Event{Type: "result", IsError: true, Result: "it broke", NumTurns: 1, SessionID: "s"})
			if got := bytes.Contains(out.Bytes(), []byte("\x1b[")); got != tc.wantOut {
				t.Errorf("escapes on stdout: %v, want %v: %q", got, tc.wantOut, out.String())
			}
			if got := bytes.Contains(errOut.Bytes(), []byte("\x1b[")); got != tc.wantErrs {
				t.Errorf("escapes on stderr: %v, want %v: %q", got, tc.wantErrs, errOut.String())
			}
			if !bytes.Contains(errOut.Bytes(), []byte("it broke")) || !bytes.Contains(errOut.Bytes(), []byte("session s")) {
				t.Errorf("no error line and footer on stderr: %q", errOut.String())
			}
		})
	}
}

// Ctrl-C can end claude before it gives any result: ask then says it was
// interrupted itself, and only then.
func TestFinishWithoutAResult(t *testing.T) {
	for _, interrupted := range []bool{false, true} {
		var out, errOut bytes.Buffer
		r := &Renderer{Out: &out, ErrOut: &errOut}
		r.Finish(interrupted)
		if got, want := errOut.String(), map[bool]string{false: "", true: "error: interrupted\n"}[interrupted]; got != want || r.Ended() {
			t.Errorf("interrupted %v: stderr %q (want %q), ended %v", interrupted, got, want, r.Ended())
		}
	}
}

// What Claude Code streams can be steered by what it read in the guest:
// text, tool names, tool arguments, errors and the result all print inert.
func TestRenderShowsGuestTextInert(t *testing.T) {
	a := termsafetest.Attack
	var out, errOut bytes.Buffer
	r := &Renderer{Out: &out, ErrOut: &errOut}
	str := func(s string) *string { return &s }
	events := []*claudecode.Event{
		{Type: "stream_event", Event: &claudecode.StreamEvent{Type: "message_start", Message: &struct {
			ID string `json:"id"`
		}{ID: "m1"}}},
		{Type: "stream_event", Event: &claudecode.StreamEvent{Type: "content_block_delta", Delta: &claudecode.Delta{Type: "text_delta", Text: "line one\n\t" + a + "\n"}}},
		{Type: "assistant", Message: &claudecode.Message{ID: "m2", Content: []claudecode.Block{
			{Type: "text", Text: a},
			{Type: "tool_use", Name: a, Input: map[string]any{"x": a}},
			{Type: "tool_use", Name: "Bash", Input: map[string]any{"command": a}},
		}}},
		{Type: "assistant", ParentToolUseID: str("t1"), Message: &claudecode.Message{ID: "m3", Content: []claudecode.Block{
			{Type: "tool_use", Name: "WebFetch", Input: map[string]any{"url": "http://x/" + a}},
		}}},
		{Type: "user", Message: &claudecode.Message{Content: []claudecode.Block{{Type: "tool_result", IsError: true, Content: mustJSON(a)}}}},
		{Type: "text", Result: a},
		{Type: "result", IsError: true, Result: a, SessionID: a},
	}
	for _, e := range events {
		r.Event(e)
	}
	r.Finish(false)
	termsafetest.Check(t, "ask's answer", out.String(), true)
	termsafetest.Check(t, "ask's footer", errOut.String(), true)
	if n := strings.Count(out.String(), "evil␛[2J"); n != 7 {
		t.Errorf("want the attack shown 7 times on stdout, got %d:\n%s", n, out.String())
	}
	if !strings.Contains(out.String(), "line one\n\tevil") {
		t.Errorf("newlines and tabs of the text were not kept: %q", out.String())
	}
}

func mustJSON(s string) []byte { b, _ := json.Marshal(s); return b }
