package guestagent

import (
	"bufio"
	"bytes"
	"encoding/json"
	"testing"

	"github.com/coworkhq/cowork/internal/execwire"
)

// FuzzExecFrames feeds arbitrary bytes through what the agent does with a
// host's frames before anything runs: reading them under hostLimits, then
// decoding and validating a start, a resize or a signal. Nothing may
// panic or read past a limit, and an accepted start must be runnable as
// validated.
func FuzzExecFrames(f *testing.F) {
	start := func(m execwire.StartMsg) []byte {
		b, err := execwire.AppendJSON(nil, execwire.Start, m)
		if err != nil {
			f.Fatal(err)
		}
		return b
	}
	for _, b := range [][]byte{
		start(execwire.StartMsg{Argv: []string{"sh", "-c", "echo hi"}, Env: []string{"A=B"}, Cwd: "/", TTY: &execwire.TerminalSize{Rows: 24, Cols: 80}}),
		start(execwire.StartMsg{Argv: []string{"./x"}, User: "0", Cwd: "relative"}),
		start(execwire.StartMsg{Argv: []string{""}, Env: []string{"=x", "A\x00=b"}}),
		append(start(execwire.StartMsg{Argv: []string{"cat"}}), execwire.AppendFrame(nil, execwire.Stdin, []byte("data"))...),
		execwire.AppendHeader(nil, execwire.CloseStdin, 0),
		execwire.AppendUint32s(nil, execwire.Signal, 2),
		execwire.AppendUint32s(nil, execwire.Resize, 99999, 0),
		execwire.AppendHeader(nil, execwire.Stdin, 1<<30),
	} {
		f.Add(b)
	}
	f.Add([]byte{0xff, 0xff, 0xff})
	accts := &accountCache{}
	f.Fuzz(func(t *testing.T, data []byte) {
		r := execwire.NewReader(bufio.NewReader(bytes.NewReader(data)), hostLimits)
		for {
			typ, n, err := r.Next()
			if err != nil {
				return
			}
			if n > execwire.MaxStart {
				t.Fatalf("accepted a %s frame of %d bytes", typ, n)
			}
			p, err := r.ReadPayload(make([]byte, n), n)
			if err != nil {
				return
			}
			switch typ {
			case execwire.Start:
				var m execwire.StartMsg
				if json.Unmarshal(p, &m) != nil {
					continue
				}
				spec, err := resolveSpec(&m, "", accts)
				if err != nil {
					continue
				}
				if len(spec.argv) == 0 || spec.path == "" || spec.dir == "" || spec.user == nil {
					t.Fatalf("accepted an incomplete start: %+v", spec)
				}
				if spec.tty != nil && checkTerminalSize(spec.tty) != nil {
					t.Fatalf("accepted a bad terminal size %v", spec.tty)
				}
			case execwire.Resize:
				v, err := execwire.Uint32s(p, 2)
				if err != nil {
					continue
				}
				sz := &execwire.TerminalSize{Rows: v[0], Cols: v[1]}
				if checkTerminalSize(sz) == nil && (sz.Rows == 0 || sz.Cols == 0 || sz.Rows > maxTermSide || sz.Cols > maxTermSide) {
					t.Fatalf("accepted size %v", sz)
				}
			case execwire.Signal:
				v, err := execwire.Uint32s(p, 1)
				if err != nil {
					continue
				}
				if n := int32(v[0]); checkSignal(n) == nil && (n <= 0 || n > 64) {
					t.Fatalf("accepted signal %d", n)
				}
			}
		}
	})
}
