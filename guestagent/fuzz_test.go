package guestagent

import (
	"testing"

	"google.golang.org/protobuf/proto"

	"github.com/coworkhq/cowork/guestagent/agentpb"
)

// FuzzExecRequest feeds arbitrary bytes through what the agent does with a
// client's message before anything runs: decoding, then validating a start,
// a resize or a signal. Nothing may panic, and an accepted start must be
// runnable as validated.
func FuzzExecRequest(f *testing.F) {
	for _, m := range []*agentpb.ExecRequest{
		{Msg: &agentpb.ExecRequest_Start{Start: &agentpb.ExecStart{Argv: []string{"sh", "-c", "echo hi"}, Env: []string{"A=B"}, Cwd: "/", Tty: &agentpb.TerminalSize{Rows: 24, Cols: 80}}}},
		{Msg: &agentpb.ExecRequest_Start{Start: &agentpb.ExecStart{Argv: []string{"./x"}, User: "0", Cwd: "relative"}}},
		{Msg: &agentpb.ExecRequest_Start{Start: &agentpb.ExecStart{Argv: []string{""}, Env: []string{"=x", "A\x00=b"}}}},
		{Msg: &agentpb.ExecRequest_Stdin{Stdin: []byte("data")}},
		{Msg: &agentpb.ExecRequest_CloseStdin{CloseStdin: &agentpb.CloseStdin{}}},
		{Msg: &agentpb.ExecRequest_Signal{Signal: &agentpb.Signal{Number: 2}}},
		{Msg: &agentpb.ExecRequest_Resize{Resize: &agentpb.TerminalSize{Rows: 99999, Cols: 0}}},
	} {
		b, err := proto.Marshal(m)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Add([]byte{0xff, 0xff, 0xff})
	accts := &accountCache{}
	f.Fuzz(func(t *testing.T, data []byte) {
		var req agentpb.ExecRequest
		if proto.Unmarshal(data, &req) != nil {
			return
		}
		switch m := req.Msg.(type) {
		case *agentpb.ExecRequest_Start:
			spec, err := resolveSpec(m.Start, "", accts)
			if err != nil {
				return
			}
			if len(spec.argv) == 0 || spec.path == "" || spec.dir == "" || spec.user == nil {
				t.Fatalf("accepted an incomplete start: %+v", spec)
			}
			if spec.tty != nil && checkTerminalSize(spec.tty) != nil {
				t.Fatalf("accepted a bad terminal size %v", spec.tty)
			}
		case *agentpb.ExecRequest_Resize:
			if checkTerminalSize(m.Resize) == nil && (m.Resize.Rows == 0 || m.Resize.Cols > maxTermSide) {
				t.Fatalf("accepted size %v", m.Resize)
			}
		case *agentpb.ExecRequest_Signal:
			n := m.Signal.GetNumber()
			if checkSignal(n) == nil && (n <= 0 || n > 64) {
				t.Fatalf("accepted signal %d", n)
			}
		}
	})
}
