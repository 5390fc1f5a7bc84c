// Package cmdtest sets up a command for a test the one way every command's
// tests need: its own arguments, its output on the test's streams, and its
// error returned rather than printed.
package cmdtest

import (
	"github.com/spf13/cobra"

	"github.com/coworkhq/cowork/cmd/cowork/iostreams"
)

// Prepare gives cmd args (never nil: cobra would read os.Args), sends its
// help and usage to ios.ErrOut, and silences cobra's own error printing.
func Prepare(cmd *cobra.Command, ios *iostreams.IOStreams, args ...string) *cobra.Command {
	cmd.SetArgs(append([]string{}, args...))
	cmd.SetOut(ios.ErrOut)
	cmd.SetErr(ios.ErrOut)
	cmd.SilenceErrors, cmd.SilenceUsage = true, true
	return cmd
}
