// Package version is `cowork version`.
package version

import (
	"encoding/json"
	"fmt"
	"runtime"

	"github.com/spf13/cobra"

	"github.com/coworkhq/cowork/cmd/cowork/cmdutil"
	"github.com/coworkhq/cowork/cmd/cowork/iostreams"
	"github.com/coworkhq/cowork/image"
	"github.com/coworkhq/cowork/internal/buildinfo"
)

// Info is what `cowork version --json` prints.
type Info struct {
	Version  string            `json:"version"`
	Commit   string            `json:"commit"`
	Go       string            `json:"go"`
	Platform string            `json:"platform"`
	Agents   []image.AgentInfo `json:"agents"`
}

// Current describes this binary.
func Current() Info {
	return Info{
		Version:  buildinfo.Version,
		Commit:   buildinfo.Commit,
		Go:       buildinfo.GoVersion(),
		Platform: runtime.GOOS + "/" + runtime.GOARCH,
		Agents:   image.Agents(),
	}
}

// NewCmdVersion builds the command.
func NewCmdVersion(ios *iostreams.IOStreams) *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:     "version",
		Short:   "Print the version of cowork and of the agents it carries",
		Example: "  cowork version\n  cowork version --json | jq -r .commit",
		Args:    cmdutil.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			info := Current()
			if asJSON {
				enc := json.NewEncoder(ios.Out)
				enc.SetIndent("", "  ")
				return enc.Encode(info)
			}
			fmt.Fprintf(ios.Out, "cowork %s\ncommit:   %s\ngo:       %s\nplatform: %s\n", info.Version, info.Commit, info.Go, info.Platform)
			if len(info.Agents) == 0 {
				fmt.Fprintln(ios.Out, "agents:   none embedded (a plain `go build`; use `make`)")
			}
			for _, a := range info.Agents {
				fmt.Fprintf(ios.Out, "agent:    linux/%s %.1f MiB sha256:%s\n", a.Arch, float64(a.Size)/(1<<20), a.SHA256[:16])
			}
			return nil
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print as JSON")
	return cmd
}
