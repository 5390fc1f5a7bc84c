// Package cmdutil holds what several commands share: the error kinds that
// decide the exit code, and how a command reaches the guest agent.
package cmdutil

import (
	"errors"
	"fmt"
	"strings"

	"github.com/spf13/cobra"
)

// FlagError is a usage mistake: the command line itself is wrong. It exits 2.
type FlagError struct{ Err error }

func (e *FlagError) Error() string { return e.Err.Error() }
func (e *FlagError) Unwrap() error { return e.Err }

// FlagErrorf makes a FlagError.
func FlagErrorf(format string, args ...any) error {
	return &FlagError{Err: fmt.Errorf(format, args...)}
}

// ExitError ends the process with Code. It prints Msg when there is one;
// without, the guest command already said what it had to say.
type ExitError struct {
	Code int
	Msg  string
}

func (e *ExitError) Error() string {
	if e.Msg != "" {
		return e.Msg
	}
	return fmt.Sprintf("exit status %d", e.Code)
}

// ExitCode maps an error returned by a command to the process exit code:
// 0 success, 1 error, 2 usage error, or the guest command's own code.
func ExitCode(err error) int {
	var exit *ExitError
	var flag *FlagError
	switch {
	case err == nil:
		return 0
	case errors.As(err, &exit):
		return exit.Code
	case errors.As(err, &flag):
		return 2
	default:
		return 1
	}
}

// NoArgs is cobra.NoArgs reporting a usage error.
func NoArgs(cmd *cobra.Command, args []string) error {
	if err := cobra.NoArgs(cmd, args); err != nil {
		return &FlagError{Err: err}
	}
	return nil
}

// UnknownCommand is the Args of a command that only groups others (cowork,
// cowork disk): an argument can only be a mistyped command, a usage error
// (exit 2) said as cobra says it, with its suggestion. cobra itself does
// so only for the root; under another group it would print help and exit 0.
func UnknownCommand(cmd *cobra.Command, args []string) error {
	if len(args) == 0 {
		return nil
	}
	hint := ""
	if s := cmd.SuggestionsFor(args[0]); len(s) > 0 {
		hint = "; did you mean " + strings.Join(s, " or ") + "?"
	}
	return FlagErrorf("unknown command %q for %q%s", args[0], cmd.CommandPath(), hint)
}
