package shquote

import (
	"os/exec"
	"testing"
)

// Each word comes back from a shell as it went in; plain words are left
// unquoted.
func TestQuote(t *testing.T) {
	for _, w := range []string{"", "plain-word_1.2:/x@y=z,+%", "two words", "it's", "$(rm -rf /)", "a\nb", "*", "'"} {
		out, err := exec.Command("sh", "-c", "printf %s "+Quote(w)).Output()
		if err != nil || string(out) != w {
			t.Errorf("%q quoted as %s came back as %q (%v)", w, Quote(w), out, err)
		}
	}
	if q := Quote("kind-cowork"); q != "kind-cowork" {
		t.Errorf("a plain word quoted: %s", q)
	}
}
