package ask

import (
	"cmp"
	"fmt"
	"io"
	"sort"
	"strings"
	"time"

	"github.com/coworkhq/cowork/cmd/cowork/iostreams"
	"github.com/coworkhq/cowork/hostd/claudecode"
	"github.com/coworkhq/cowork/internal/termsafe"
)

// Renderer shows Claude Code's stream-json as a person reads it: the
// assistant's text as it streams, one line per tool call, failed tool
// results marked, and a footer with duration, turns, cost and session.
type Renderer struct {
	Out    io.Writer // the answer
	ErrOut io.Writer // the footer and errors
	// Color and ErrColor are decided apart: `cowork ask x 2>log` on a
	// terminal must keep escapes out of the log.
	Color, ErrColor bool

	streamed  map[string]bool // messages whose text arrived as deltas
	current   string          // the message being streamed
	midLine   bool            // the last text did not end with a newline
	sessionID string
	result    *claudecode.Event
}

// newRenderer renders onto the command's streams, in colour where each
// stream may carry it.
func newRenderer(ios *iostreams.IOStreams) *Renderer {
	return &Renderer{Out: ios.Out, ErrOut: ios.ErrOut, Color: ios.ColorStdout(), ErrColor: ios.ColorEnabled()}
}

// paint colours s for Out; paintErr for ErrOut.
func (r *Renderer) paint(code, s string) string    { return paint(r.Color, code, s) }
func (r *Renderer) paintErr(code, s string) string { return paint(r.ErrColor, code, s) }

func paint(on bool, code, s string) string {
	if !on {
		return s
	}
	return "\x1b[" + code + "m" + s + "\x1b[0m"
}

// endLine finishes a line of streamed text before anything else is shown.
func (r *Renderer) endLine() {
	if r.midLine {
		fmt.Fprintln(r.Out)
		r.midLine = false
	}
}

// text shows the assistant's text: its lines and tabs as they are, any
// other control character as a visible picture (termsafe), since what a
// model writes can be steered by what it read in the guest.
func (r *Renderer) text(s string) {
	if s == "" {
		return
	}
	s = termsafe.Text(s)
	fmt.Fprint(r.Out, s)
	r.midLine = !strings.HasSuffix(s, "\n")
}

// Event shows one event.
func (r *Renderer) Event(e *claudecode.Event) {
	if r.streamed == nil {
		r.streamed = map[string]bool{}
	}
	if e.SessionID != "" {
		r.sessionID = e.SessionID
	}
	sub := e.ParentToolUseID != nil && *e.ParentToolUseID != ""
	switch e.Type {
	case "stream_event":
		if sub || e.Event == nil {
			return
		}
		if e.Event.Type == "message_start" && e.Event.Message != nil {
			r.current = e.Event.Message.ID
		}
		if d := e.Event.Delta; d != nil && d.Type == "text_delta" {
			r.streamed[r.current] = true
			r.text(d.Text)
		}
	case "assistant":
		if e.Message == nil {
			return
		}
		for _, b := range e.Message.Content {
			switch b.Type {
			case "text":
				if !r.streamed[e.Message.ID] && !sub {
					r.text(b.Text)
				}
			case "tool_use":
				r.endLine()
				indent := ""
				if sub {
					indent = "  "
				}
				fmt.Fprintf(r.Out, "%s%s %s\n", indent, r.paint("36", "●"), r.paint("1", termsafe.Line(b.Name))+toolArg(b))
			}
		}
	case "user":
		if e.Message == nil {
			return
		}
		for _, b := range e.Message.Content {
			if b.Type == "tool_result" && b.IsError {
				r.endLine()
				fmt.Fprintf(r.Out, "  %s %s\n", r.paint("31", "✗"), termsafe.Line(oneLine(b.ResultText(), 120)))
			}
		}
	case "result":
		r.endLine()
		r.result = e
		r.footer(e)
	case "text":
		r.endLine()
		fmt.Fprintln(r.ErrOut, termsafe.Text(e.Result))
	}
}

// Finish ends the output. When Ctrl-C ended claude before it gave any
// result (it may then exit 0 and say nothing), it says so, as the footer
// of an aborted run would.
func (r *Renderer) Finish(interrupted bool) {
	r.endLine()
	if interrupted && r.result == nil {
		fmt.Fprintf(r.ErrOut, "%s interrupted\n", r.paintErr("31", "error:"))
	}
}

// Ended tells whether claude gave its result.
func (r *Renderer) Ended() bool { return r.result != nil }

// Failed tells whether claude's last result reported an error: claude
// then may still exit 0 (it does after an interrupted tool).
func (r *Renderer) Failed() bool { return r.result != nil && r.result.IsError }

func (r *Renderer) footer(e *claudecode.Event) {
	d := time.Duration(e.DurationMs * float64(time.Millisecond)).Round(100 * time.Millisecond)
	turns := "turns"
	if e.NumTurns == 1 {
		turns = "turn"
	}
	line := fmt.Sprintf("%s · %d %s · $%.4f", d, e.NumTurns, turns, e.TotalCostUSD)
	// A run that failed before its first turn saved nothing to resume
	// (it may name a session that does not exist, the one asked for).
	if !e.IsError || e.NumTurns > 0 {
		line += " · session " + termsafe.Line(e.SessionID)
	}
	if e.IsError {
		why := firstLine(e.Result, 300)
		switch {
		case why != "":
		case strings.HasPrefix(e.TerminalReason, "aborted"):
			why = "interrupted"
		case len(e.Errors) > 0:
			why = firstLine(strings.Join(e.Errors, "; "), 300)
		default:
			why = strings.ReplaceAll(cmp.Or(e.Subtype, "failed"), "_", " ")
		}
		fmt.Fprintf(r.ErrOut, "%s %s\n", r.paintErr("31", "error:"), termsafe.Line(why))
	}
	fmt.Fprintln(r.ErrOut, r.paintErr("2", "— "+line))
}

// keyArgs is the argument that says what a tool call does, by tool.
var keyArgs = map[string]string{
	"Bash": "command", "Read": "file_path", "Write": "file_path", "Edit": "file_path", "MultiEdit": "file_path",
	"NotebookEdit": "notebook_path", "Glob": "pattern", "Grep": "pattern", "WebFetch": "url", "WebSearch": "query",
	"Task": "description", "Agent": "description", "Skill": "skill",
}

// toolArg is "(key argument)" for a tool call, on one short line.
func toolArg(b claudecode.Block) string {
	v, ok := b.Input[keyArgs[b.Name]]
	if !ok {
		// Unknown tool: its first string argument, by name for a stable choice.
		keys := make([]string, 0, len(b.Input))
		for k := range b.Input {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		for _, k := range keys {
			if s, isStr := b.Input[k].(string); isStr && s != "" {
				v, ok = s, true
				break
			}
		}
	}
	s, isStr := v.(string)
	if !ok || !isStr || s == "" {
		return ""
	}
	return "(" + termsafe.Line(firstLine(s, 100)) + ")"
}

// oneLine folds s onto one line ("; " between its lines), cut to n runes.
func oneLine(s string, n int) string {
	var parts []string
	for _, l := range strings.Split(strings.TrimSpace(s), "\n") {
		if l = strings.TrimSpace(l); l != "" {
			parts = append(parts, l)
		}
	}
	s = strings.Join(parts, "; ")
	if r := []rune(s); len(r) > n {
		s = string(r[:n]) + "…"
	}
	return s
}

// firstLine is s's first line, cut to n runes.
func firstLine(s string, n int) string {
	s = strings.TrimSpace(s)
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		s = s[:i] + " …"
	}
	if r := []rune(s); len(r) > n {
		s = string(r[:n]) + "…"
	}
	return s
}
