package cmdutil

import (
	"strings"
	"testing"

	"github.com/coworkhq/cowork/cmd/cowork/iostreams"
)

func TestConfirmAsksOnlyATerminal(t *testing.T) {
	for _, c := range []struct {
		typed string
		want  bool
	}{{"y\n", true}, {"YES\n", true}, {" yes \n", true}, {"n\n", false}, {"\n", false}, {"yep\n", false}, {"", false}} {
		ios, in, _, errOut := iostreams.Test()
		ios.SetStdinTTY(true)
		in.WriteString(c.typed)
		got, err := Confirm(ios, "cowork wipe", "Wipe it?", "--yes")
		if err != nil || got != c.want {
			t.Errorf("typed %q: %v %v, want %v", c.typed, got, err, c.want)
		}
		if errOut.String() != "Wipe it? [y/N] " {
			t.Errorf("typed %q: asked %q", c.typed, errOut)
		}
	}

	// Piped input is no answer, whatever it says.
	ios, in, _, errOut := iostreams.Test()
	in.WriteString("y\n")
	got, err := Confirm(ios, "cowork wipe", "Wipe it?", "--yes")
	if got || ExitCode(err) != 2 || err.Error() != "cowork wipe asks for confirmation; pass --yes when stdin is not a terminal" {
		t.Errorf("without a terminal: %v %v (exit %d)", got, err, ExitCode(err))
	}
	if errOut.Len() != 0 || strings.Contains(err.Error(), "\n") {
		t.Errorf("without a terminal it asked %q, or said more than a line", errOut)
	}
}
