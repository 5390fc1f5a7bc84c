package cmdutil

import (
	"bufio"
	"fmt"
	"strings"

	"github.com/coworkhq/cowork/cmd/cowork/iostreams"
)

// Confirm asks a person before a command destroys something: question goes
// to stderr, and only "y" or "yes" on stdin is a yes. It never asks without
// a terminal on stdin (a script's piped input is no answer): it returns a
// usage error naming flag, the command's way to say yes in advance.
// command is the command as a user types it, e.g. "cowork delete".
func Confirm(ios *iostreams.IOStreams, command, question, flag string) (bool, error) {
	if !ios.IsStdinTTY() {
		return false, FlagErrorf("%s asks for confirmation; pass %s when stdin is not a terminal", command, flag)
	}
	fmt.Fprintf(ios.ErrOut, "%s [y/N] ", question)
	answer, _ := bufio.NewReader(ios.In).ReadString('\n')
	a := strings.ToLower(strings.TrimSpace(answer))
	return a == "y" || a == "yes", nil
}
