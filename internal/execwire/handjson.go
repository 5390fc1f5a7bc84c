package execwire

import (
	"bytes"
	"encoding/json"
	"strconv"
	"unicode/utf8"
)

// AppendStart appends a Start frame carrying m, encoded as encoding/json
// would (the agent decodes it with encoding/json). It is written out by
// hand because the CLI sends one start per process: encoding/json's first
// Marshal of StartMsg builds its encoder by reflection, 0.3–0.45 ms of a
// `cowork exec` that takes a few milliseconds in all (issue 17).
func AppendStart(b []byte, m *StartMsg) []byte {
	at := len(b)
	b = AppendHeader(b, Start, 0)
	b = append(b, `{"argv":`...)
	b = appendStrings(b, m.Argv)
	if len(m.Env) > 0 {
		b = append(b, `,"env":`...)
		b = appendStrings(b, m.Env)
	}
	if m.Cwd != "" {
		b = append(b, `,"cwd":`...)
		b = appendString(b, m.Cwd)
	}
	if m.User != "" {
		b = append(b, `,"user":`...)
		b = appendString(b, m.User)
	}
	if m.TTY != nil {
		b = append(b, `,"tty":{"rows":`...)
		b = strconv.AppendUint(b, uint64(m.TTY.Rows), 10)
		b = append(b, `,"cols":`...)
		b = strconv.AppendUint(b, uint64(m.TTY.Cols), 10)
		b = append(b, '}')
	}
	if m.NoStdin {
		b = append(b, `,"no_stdin":true`...)
	}
	if m.EndSession {
		b = append(b, `,"end_session":true`...)
	}
	if m.ExecID != "" {
		b = append(b, `,"exec_id":`...)
		b = appendString(b, m.ExecID)
	}
	b = append(b, '}')
	PutHeader(b[at:], Start, len(b)-at-HeaderSize)
	return b
}

// appendStrings appends a JSON array of strings; nil is null, as
// encoding/json has it.
func appendStrings(b []byte, ss []string) []byte {
	if ss == nil {
		return append(b, "null"...)
	}
	b = append(b, '[')
	for i, s := range ss {
		if i > 0 {
			b = append(b, ',')
		}
		b = appendString(b, s)
	}
	return append(b, ']')
}

// appendString appends s as a JSON string: quotes, backslashes and
// control characters escaped, invalid UTF-8 replaced with U+FFFD, and
// U+2028 and U+2029 escaped, like encoding/json.
func appendString(b []byte, s string) []byte {
	const hex = "0123456789abcdef"
	b = append(b, '"')
	for i := 0; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf {
			switch {
			case c == '"' || c == '\\':
				b = append(b, '\\', c)
			case c == '\n':
				b = append(b, '\\', 'n')
			case c == '\r':
				b = append(b, '\\', 'r')
			case c == '\t':
				b = append(b, '\\', 't')
			case c < 0x20:
				b = append(b, '\\', 'u', '0', '0', hex[c>>4], hex[c&0xf])
			default:
				b = append(b, c)
			}
			i++
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		switch {
		case r == utf8.RuneError && size == 1:
			b = append(b, `\ufffd`...)
		case r == '\u2028' || r == '\u2029':
			b = append(b, '\\', 'u', '2', '0', '2', hex[r&0xf])
		default:
			b = append(b, s[i:i+size]...)
		}
		i += size
	}
	return append(b, '"')
}

// ParseExit decodes an Exit frame's payload. The agent's usual exit,
// encoded by encoding/json, is exactly {"code":N}: that form is read
// directly, and every other payload goes through encoding/json. The
// first json.Unmarshal in a process costs its decoder's start, about 3%
// of a `cowork exec` in perf.
func ParseExit(p []byte) (ExitMsg, error) {
	const prefix = `{"code":`
	if digits, ok := bytes.CutPrefix(p, []byte(prefix)); ok && len(digits) >= 2 && len(digits) <= 4 && digits[len(digits)-1] == '}' {
		digits = digits[:len(digits)-1]
		if code, ok := smallUint(digits); ok {
			return ExitMsg{Code: code}, nil
		}
	}
	var m ExitMsg
	err := json.Unmarshal(p, &m)
	return m, err
}

// smallUint parses 1 to 3 decimal digits in JSON's form (no leading zero).
func smallUint(d []byte) (int, bool) {
	if len(d) == 0 || len(d) > 3 || (d[0] == '0' && len(d) > 1) {
		return 0, false
	}
	n := 0
	for _, c := range d {
		if c < '0' || c > '9' {
			return 0, false
		}
		n = n*10 + int(c-'0')
	}
	return n, true
}
