package termsafe

import (
	"encoding/json"
	"strings"
	"testing"
	"unicode/utf8"
)

const attack = "a\x1b[2Jb\x1b]52;c;cm0gLXJmIH4=\x07c\x07d\x9b31me\u009b1;1Hf\u202eg\xff\xfe\rh\x7fi\x00j"

func TestLineShowsEveryControl(t *testing.T) {
	got := Line(attack + "\nnext\tcol")
	want := "a␛[2Jb␛]52;c;cm0gLXJmIH4=␇c␇d\uFFFD31me\uFFFD1;1Hf\uFFFDg\uFFFD\uFFFD␍h␡i␀j␊next␉col"
	if got != want {
		t.Errorf("Line:\n got %q\nwant %q", got, want)
	}
	for _, r := range got {
		if r < 0x20 || r == 0x7f || (r >= 0x80 && r <= 0x9f) {
			t.Errorf("control %U left in %q", r, got)
		}
	}
	if !utf8.ValidString(got) {
		t.Errorf("invalid UTF-8 left in %q", got)
	}
}

func TestTextKeepsLinesAndTabs(t *testing.T) {
	got := Text("boot ok\r\n\tstep 2\rover\x1b[31mred\n")
	if want := "boot ok\n\tstep 2␍over␛[31mred\n"; got != want {
		t.Errorf("Text: got %q, want %q", got, want)
	}
	if got := Text("ends in CR\r"); got != "ends in CR␍" {
		t.Errorf("a final CR: %q", got)
	}
}

func TestPrintableTextIsKept(t *testing.T) {
	for _, s := range []string{"", "plain ascii ~!@#$%^&*()", "héllo wörld ✓ 日本語 🚀", "a ␛ picture stays"} {
		if Line(s) != s || Text(s) != s {
			t.Errorf("changed printable %q: %q %q", s, Line(s), Text(s))
		}
		if !Safe(s, false) {
			t.Errorf("Safe(%q) = false", s)
		}
	}
}

func TestIdempotent(t *testing.T) {
	for _, s := range []string{attack, attack + "\r\n\t", "\xc2", "\xe2\x90", "\r\r\n"} {
		line, text := Line(s), Text(s)
		if Line(line) != line || Text(line) != line {
			t.Errorf("Line's output %q changes when cleaned again", line)
		}
		if Text(text) != text {
			t.Errorf("Text's output %q changes when cleaned again: %q", text, Text(text))
		}
		if !Safe(line, false) || !Safe(text, true) {
			t.Errorf("Safe rejects cleaned %q / %q", line, text)
		}
	}
}

func TestSafe(t *testing.T) {
	for _, s := range []string{"\x1b", "\x07", "\x9b", "\u009b", "\xff", "\u202e", "\x7f", "\r"} {
		if Safe(s, true) || Safe(s, false) {
			t.Errorf("Safe(%q) = true", s)
		}
	}
	if Safe("a\nb", false) || !Safe("a\nb\tc", true) {
		t.Error("newlines and tabs: safe only in multiline text")
	}
	if !Safe("\uFFFD", false) {
		t.Error("a real U+FFFD is printable")
	}
}

func TestJSON(t *testing.T) {
	in := map[string]any{"name": attack, "n": 1, "list": []string{"ok", "\u009b\u202e"}}
	compact, _ := json.Marshal(in)
	indented, _ := json.MarshalIndent(in, "", "  ")
	for _, data := range [][]byte{compact, indented} {
		out := JSON(data)
		if !Safe(strings.ReplaceAll(string(out), "\n", ""), false) {
			t.Errorf("JSON left controls: %q", out)
		}
		var back, orig map[string]any
		if err := json.Unmarshal(out, &back); err != nil {
			t.Fatalf("JSON broke the document: %v: %s", err, out)
		}
		json.Unmarshal(data, &orig)
		if b1, _ := json.Marshal(back); string(b1) != string(mustMarshal(orig)) {
			t.Errorf("JSON changed the value:\n got %s\nwant %s", b1, mustMarshal(orig))
		}
	}
	plain := []byte(`{"a":"b"}`)
	if got := JSON(plain); &got[0] != &plain[0] {
		t.Error("JSON copied a document that needed nothing")
	}
	if got := string(JSON([]byte("not json \x1b[2J"))); got != "not json ␛[2J" {
		t.Errorf("not JSON: %q", got)
	}
}

func mustMarshal(v any) []byte { b, _ := json.Marshal(v); return b }
