package ask

import (
	"bytes"
	"flag"
	"os"
	"path/filepath"
	"testing"

	"github.com/coworkhq/cowork/hostd/claudecode"
)

var update = flag.Bool("update", false, "rewrite the golden files")

// Recorded transcripts of the real Claude Code against the fake API render
// as the golden files say.
func TestRenderTranscripts(t *testing.T) {
	for _, name := range []string{"text", "tool-error", "interrupted"} {
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
			r.Finish()
			// Interrupted, claude exits 0 but its result says it failed.
			if r.Failed() != (name == "interrupted") {
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
