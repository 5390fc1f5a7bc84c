package execwire

import (
	"encoding/json"
	"reflect"
	"testing"
)

// decodeStart checks frame is one whole Start frame and decodes it as the
// agent does.
func decodeStart(t *testing.T, frame []byte) StartMsg {
	t.Helper()
	if len(frame) < HeaderSize || Type(frame[0]) != Start {
		t.Fatalf("not a start frame: %q", frame)
	}
	n := int(frame[1])<<24 | int(frame[2])<<16 | int(frame[3])<<8 | int(frame[4])
	if n != len(frame)-HeaderSize {
		t.Fatalf("header says %d bytes, payload has %d", n, len(frame)-HeaderSize)
	}
	var m StartMsg
	if err := json.Unmarshal(frame[HeaderSize:], &m); err != nil {
		t.Fatalf("payload %q is not JSON: %v", frame[HeaderSize:], err)
	}
	return m
}

// sameAsEncodingJSON checks that AppendStart's frame decodes to what
// encoding/json's encoding of m decodes to.
func sameAsEncodingJSON(t *testing.T, m *StartMsg) {
	t.Helper()
	want, err := AppendJSON(nil, Start, m)
	if err != nil {
		t.Fatal(err)
	}
	prefix := []byte("kept")
	got := AppendStart(prefix, m)
	if string(got[:len(prefix)]) != "kept" {
		t.Fatalf("AppendStart overwrote what b held: %q", got[:len(prefix)])
	}
	if g, w := decodeStart(t, got[len(prefix):]), decodeStart(t, want); !reflect.DeepEqual(g, w) {
		t.Fatalf("AppendStart(%#v) decodes to %#v; encoding/json's to %#v\nframe %q", m, g, w, got[len(prefix):])
	}
}

func TestAppendStartMatchesEncodingJSON(t *testing.T) {
	for _, m := range []StartMsg{
		{},
		{Argv: []string{"true"}},
		{Argv: []string{}, Env: []string{}},
		{Argv: []string{"bash", "-lc", `echo "a\b" 'c' $HOME <x> & y`}, Env: []string{"A=1", "B=\n\t\r\x00\x1f\x7f"}, Cwd: "/workspace", User: "cowork"},
		{Argv: []string{"\xff\xfe bad utf-8 \xc3", "é ü 日本 🙂", "\u2028\u2029"}, User: "1000", NoStdin: true},
		{Argv: []string{"vim"}, TTY: &TerminalSize{Rows: 24, Cols: 80}},
		{Argv: []string{"x"}, TTY: &TerminalSize{Rows: 1<<32 - 1, Cols: 0}},
		{Argv: []string{"claude"}, EndSession: true},
		{Argv: []string{"curl"}, ExecID: "0123456789abcdef"},
	} {
		sameAsEncodingJSON(t, &m)
	}
}

func FuzzAppendStart(f *testing.F) {
	f.Add("true", "A=1", "/", "cowork", uint32(0), uint32(0), false, false)
	f.Add("\x00\"\\\xff\u2028", "\n", "é", "", uint32(24), uint32(80), true, true)
	f.Fuzz(func(t *testing.T, arg, env, cwd, user string, rows, cols uint32, tty, noStdin bool) {
		m := StartMsg{Argv: []string{arg, env + arg}, Env: []string{env}, Cwd: cwd, User: user, NoStdin: noStdin}
		if tty {
			m.TTY = &TerminalSize{Rows: rows, Cols: cols}
		}
		sameAsEncodingJSON(t, &m)
	})
}

// ParseExit's answer is encoding/json's for every payload.
func checkParseExit(t *testing.T, p []byte) {
	t.Helper()
	got, gotErr := ParseExit(p)
	var want ExitMsg
	wantErr := json.Unmarshal(p, &want)
	if (gotErr == nil) != (wantErr == nil) || got != want {
		t.Fatalf("ParseExit(%q) = %+v, %v; encoding/json: %+v, %v", p, got, gotErr, want, wantErr)
	}
}

func TestParseExitMatchesEncodingJSON(t *testing.T) {
	for _, p := range []string{
		`{"code":0}`, `{"code":1}`, `{"code":255}`, `{"code":256}`, `{"code":999}`, `{"code":1000}`,
		`{"code":01}`, `{"code":-1}`, `{"code":}`, `{"code":1 }`, `{"code":1}x`, `{"code":"1"}`,
		`{"code":137,"signal":"SIGKILL"}`, `{"code":-1,"error":"no such file","kind":"not_found"}`,
		``, `{`, `null`, `{"code":1e2}`, `{"code":12}}`,
	} {
		checkParseExit(t, []byte(p))
	}
}

func FuzzParseExit(f *testing.F) {
	f.Add([]byte(`{"code":0}`))
	f.Add([]byte(`{"code":137,"signal":"SIGKILL"}`))
	f.Add([]byte(`{"code":09}`))
	f.Fuzz(func(t *testing.T, p []byte) { checkParseExit(t, p) })
}
