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

// Options is a parsed `cowork version` command line.
type Options struct {
	IO   *iostreams.IOStreams
	JSON bool
}

// NewCmdVersion builds the command. runF, when not nil, gets the options
// instead of running them (tests).
func NewCmdVersion(ios *iostreams.IOStreams, runF func(*Options) error) *cobra.Command {
	o := &Options{IO: ios}
	cmd := &cobra.Command{
		Use:     "version",
		Short:   "Print the version of cowork and of the agents it carries",
		Example: "  cowork version\n  cowork version --json | jq -r .commit",
		Args:    cmdutil.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if runF != nil {
				return runF(o)
			}
			return run(o, Current())
		},
	}
	cmd.Flags().BoolVar(&o.JSON, "json", false, "print as JSON")
	return cmd
}

// run prints info, for a person or as JSON.
func run(o *Options, info Info) error {
	if o.JSON {
		enc := json.NewEncoder(o.IO.Out)
		enc.SetIndent("", "  ")
		return enc.Encode(info)
	}
	fmt.Fprintf(o.IO.Out, "cowork %s\ncommit:   %s\ngo:       %s\nplatform: %s\n", info.Version, info.Commit, info.Go, info.Platform)
	if len(info.Agents) == 0 {
		fmt.Fprintln(o.IO.Out, "agents:   none embedded (a plain `go build`; use `make`)")
	}
	for _, a := range info.Agents {
		fmt.Fprintf(o.IO.Out, "agent:    linux/%s %.1f MiB sha256:%s\n", a.Arch, float64(a.Size)/(1<<20), a.SHA256[:16])
	}
	return nil
}
