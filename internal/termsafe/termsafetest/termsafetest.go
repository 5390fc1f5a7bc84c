// Package termsafetest holds the hostile string the tests of every path
// that prints guest text feed it, and the check of what came out.
package termsafetest

import (
	"strings"
	"testing"

	"github.com/coworkhq/cowork/internal/termsafe"
)

// Attack is text a hostile guest might send to reach the user's terminal:
// clear the screen (ESC[2J), write the clipboard (OSC 52, ended by BEL), a
// bare BEL, the 8-bit CSI both as a raw byte and as UTF-8 (U+009B), a
// right-to-left override, bytes that are not UTF-8, and a carriage return
// that would overwrite the line.
const Attack = "evil\x1b[2J\x1b]52;c;cm0gLXJmIH4=\x07bell\x07csi\x9b31mc1\u009b1;1Hbidi\u202etxt.exe\xff\xfe\rfake"

// Check fails t when out, what a command printed, has any of Attack's
// weapons in it raw; multiline allows newlines and tabs.
func Check(t testing.TB, what, out string, multiline bool) {
	t.Helper()
	if !termsafe.Safe(out, multiline) {
		t.Errorf("%s prints guest text raw: %q", what, out)
	}
	if strings.Contains(out, "evil") && !strings.Contains(out, "␛[2J") && !strings.Contains(out, `\u001b[2J`) {
		// The attack arrived, and not as the visible text it should be.
		t.Errorf("%s lost the escape sequence instead of showing it: %q", what, out)
	}
}
