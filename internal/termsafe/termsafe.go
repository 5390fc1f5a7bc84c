// Package termsafe makes text that came from the guest safe to print on the
// user's terminal. The guest is hostile: a console line, a host name, a
// tool argument or an error message it wrote could carry escape sequences
// that clear the screen, retitle the window, write the clipboard (OSC 52)
// or fake output, if they reached a terminal as they are.
//
// Nothing is dropped silently: every control character becomes a visible
// picture of itself (ESC shows as ␛, BEL as ␇), which a terminal prints and
// never acts on, so an escape sequence is left as inert text the user can
// still read. C1 controls (U+0080 to U+009F, CSI among them), the
// formatting characters that reorder text (bidi overrides and isolates)
// and bytes that are not UTF-8 become U+FFFD. Printable UTF-8 is kept.
// Both are idempotent, and Text leaves what Line made as it is, so text
// cleaned where it enters the host can be cleaned again where it is printed.
package termsafe

import (
	"encoding/json"
	"strings"
	"unicode/utf8"
)

// Line makes s safe to print as (part of) one line: newlines and tabs are
// shown as pictures too, so a guest cannot start a fake line of output.
func Line(s string) string { return clean(s, false) }

// Text makes s safe to print as text that may span lines: newlines and
// tabs stay, a carriage return before a newline is dropped (console lines
// end in CRLF), and any other carriage return is shown, since it would
// let the guest overwrite what the line showed.
func Text(s string) string { return clean(s, true) }

// Safe reports whether s prints as it is: valid UTF-8 without control
// characters other than newline and tab (when multiline), nor anything
// else Line and Text replace.
func Safe(s string, multiline bool) bool {
	for i, r := range s {
		if r == utf8.RuneError {
			if _, size := utf8.DecodeRuneInString(s[i:]); size <= 1 {
				return false
			}
		}
		if multiline && (r == '\n' || r == '\t') {
			continue
		}
		if replace(r) != r {
			return false
		}
	}
	return true
}

func clean(s string, multiline bool) string {
	if Safe(s, multiline) {
		return s
	}
	var b strings.Builder
	b.Grow(len(s) + 8)
	for i := 0; i < len(s); {
		r, size := utf8.DecodeRuneInString(s[i:])
		i += size
		switch {
		case r == utf8.RuneError && size <= 1:
			b.WriteRune(utf8.RuneError)
		case multiline && (r == '\n' || r == '\t'):
			b.WriteRune(r)
		case multiline && r == '\r' && i < len(s) && s[i] == '\n':
			// CRLF: the LF alone ends the line.
		default:
			b.WriteRune(replace(r))
		}
	}
	return b.String()
}

// replace is what r prints as: itself when harmless.
func replace(r rune) rune {
	switch {
	case r < 0x20:
		return 0x2400 + r // ␀ … ␟, ESC as ␛
	case r == 0x7f:
		return '\u2421' // ␡
	case r >= 0x80 && r <= 0x9f: // C1: CSI, OSC, ST... in 8-bit form
		return utf8.RuneError
	case r >= 0x202a && r <= 0x202e, r >= 0x2066 && r <= 0x2069: // bidi embeddings, overrides, isolates
		return utf8.RuneError
	}
	return r
}

// JSON rewrites a JSON text so that it prints safely without changing
// what it decodes to: encoding/json already writes C0 controls and invalid
// UTF-8 inside strings as escapes, and this escapes the rest (DEL, C1 and
// the bidi controls) as \uXXXX too. Whitespace between values, an
// indented document's newlines among it, stays. Anything that is not valid
// JSON is returned as Line would print it.
func JSON(data []byte) []byte {
	if !json.Valid(data) {
		return []byte(Line(string(data)))
	}
	var b []byte
	last := 0 // data[:last] is in b already
	for i := 0; i < len(data); {
		r, size := utf8.DecodeRune(data[i:])
		bad := r == utf8.RuneError && size <= 1
		if bad || (r >= 0x7f && replace(r) != r) {
			// Outside its strings a JSON text is ASCII: r is inside one.
			if bad {
				r = utf8.RuneError
			}
			b = append(b, data[last:i]...)
			b = append(b, '\\', 'u')
			const hex = "0123456789abcdef"
			b = append(b, hex[r>>12&0xf], hex[r>>8&0xf], hex[r>>4&0xf], hex[r&0xf])
			last = i + size
		}
		i += size
	}
	if b == nil {
		return data
	}
	return append(b, data[last:]...)
}
