package claudecode

import (
	"slices"
	"strings"
	"testing"
)

// FuzzParseArgs: any command line either parses or is refused with an
// error, never a panic; and what cowork forwards to claude (Claude) parses
// again to itself with nothing left over, so forwarding cannot change what
// an option means or turn a value into a prompt.
func FuzzParseArgs(f *testing.F) {
	for _, seed := range []string{
		"-c\x00say hi",
		"--model\x00opus\x00--max-budget-usd\x001.0\x00prompt",
		"--allowedTools\x00Bash\x00Edit\x00--\x00fix it",
		"-vc\x00-r\x00abc",
		"--debug\x00hooks\x00--print",
		"--project=demo\x00-p\x00x",
		"--add-dir\x00/a\x00/b\x00-c",
		"-\x00--\x00-x",
	} {
		f.Add(seed)
	}
	own := []Flag{{Long: "--project", Arity: RequiredValue}, {Long: "--instance", Arity: RequiredValue}}
	f.Fuzz(func(t *testing.T, line string) {
		args := strings.Split(line, "\x00")
		p, err := ParseArgs(args, own)
		if err != nil {
			return
		}
		again, err := ParseArgs(p.Claude, nil)
		if err != nil {
			t.Fatalf("forwarded %q does not parse: %v", p.Claude, err)
		}
		if !slices.Equal(again.Claude, p.Claude) || len(again.Positional) != 0 {
			t.Fatalf("forwarded %q parses as options %q and positionals %q", p.Claude, again.Claude, again.Positional)
		}
	})
}
