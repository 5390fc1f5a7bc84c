// Package planned holds the seed's commands that are not built yet: each
// has its help text and examples, and fails with a clear message.
package planned

import (
	"fmt"
	"slices"

	"github.com/spf13/cobra"
)

type spec struct {
	use, short, long, example, issue string
}

var specs = []spec{
	{"ask", "Ask Claude Code a question, non-interactively", "Run `claude -p` in the guest and render its answer as it streams.",
		"  cowork ask \"write a python hello world program\"\n  cowork ask -c \"add error handling\"\n  cowork ask --project myapp \"create a web app\"", "the Claude Code work (issue 6)"},
}

// Commands returns the planned commands.
func Commands() []*cobra.Command {
	var cmds []*cobra.Command
	for _, s := range specs {
		cmds = append(cmds, &cobra.Command{
			Use:     s.use,
			Short:   s.short + " (not implemented yet)",
			Long:    s.long + "\n\nNot implemented yet: it arrives with " + s.issue + ".",
			Example: s.example,
			// Accept any flags the final command will have, so the answer is
			// always "not yet" rather than a confusing usage error.
			DisableFlagParsing: true,
			RunE: func(cmd *cobra.Command, args []string) error {
				if slices.Contains(args, "--help") || slices.Contains(args, "-h") {
					return cmd.Help()
				}
				return fmt.Errorf("cowork %s is not implemented yet; it arrives with %s", s.use, s.issue)
			},
		})
	}
	return cmds
}
