// Package version is `cowork version`.
package version

import (
	"context"
	"encoding/json"
	"fmt"
	"runtime"

	"github.com/spf13/cobra"

	"github.com/coworkhq/cowork"
	"github.com/coworkhq/cowork/cmd/cowork/cmdutil"
	"github.com/coworkhq/cowork/cmd/cowork/iostreams"
	"github.com/coworkhq/cowork/internal/buildinfo"
	"github.com/coworkhq/cowork/internal/hostdwire"
)

// Info is what `cowork version --json` prints: this binary and the daemon
// binary it starts; with --all, also that binary's build and the guest
// agents it carries.
type Info struct {
	Version  string            `json:"version"`
	Commit   string            `json:"commit"`
	Go       string            `json:"go"`
	Platform string            `json:"platform"`
	Hostd    Hostd             `json:"hostd"`
	Agents   []hostdwire.Agent `json:"agents,omitempty"`
	// HostdKubeVirt is cowork-hostd-kubevirt, the daemon of instances on
	// a cluster, when it is installed (it is optional: `make kubevirt`).
	HostdKubeVirt *Hostd `json:"hostd_kubevirt,omitempty"`
}

// Hostd is the daemon binary this cowork starts.
type Hostd struct {
	Path    string `json:"path,omitempty"`
	Version string `json:"version,omitempty"`
	Commit  string `json:"commit,omitempty"`
	Err     string `json:"error,omitempty"` // why it could not be asked
}

// Current describes this binary and finds the daemon binary; with all, it
// also asks that binary about itself.
//
// Asking means starting cowork-hostd, which costs more than the rest of
// `cowork version` together (it links the hypervisor, the netstack and
// the agents), so a plain `cowork version` only names the binary.
func Current(ctx context.Context, all bool) Info {
	info := Info{
		Version:  buildinfo.Version,
		Commit:   buildinfo.Commit,
		Go:       buildinfo.GoVersion(),
		Platform: runtime.GOOS + "/" + runtime.GOARCH,
	}
	if kv, err := cowork.KubeVirtHostdBinary(); err == nil {
		info.HostdKubeVirt = &Hostd{Path: kv}
		if all {
			if _, v, err := cowork.KubeVirtHostdVersion(ctx); err != nil {
				info.HostdKubeVirt.Err = err.Error()
			} else {
				info.HostdKubeVirt.Version, info.HostdKubeVirt.Commit = v.Version, v.Commit
			}
		}
	}
	if !all {
		path, err := cowork.HostdBinary()
		if err != nil {
			info.Hostd.Err = err.Error()
		}
		info.Hostd.Path = path
		return info
	}
	path, v, err := cowork.HostdVersion(ctx)
	if err != nil {
		info.Hostd.Err = err.Error()
		return info
	}
	info.Hostd = Hostd{Path: path, Version: v.Version, Commit: v.Commit}
	info.Agents = v.Agents
	return info
}

// Options is a parsed `cowork version` command line.
type Options struct {
	IO   *iostreams.IOStreams
	JSON bool
	All  bool // also ask the daemon binary for its build and agents
}

// NewCmdVersion builds the command. runF, when not nil, gets the options
// instead of running them (tests).
func NewCmdVersion(ios *iostreams.IOStreams, runF func(*Options) error) *cobra.Command {
	o := &Options{IO: ios}
	cmd := &cobra.Command{
		Use:     "version",
		Short:   "Print the version of cowork and name its daemon (--all: the daemon's build and agents too)",
		Example: "  cowork version\n  cowork version --all\n  cowork version --json | jq -r .commit",
		Args:    cmdutil.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if runF != nil {
				return runF(o)
			}
			return run(o, Current(cmd.Context(), o.All))
		},
	}
	cmd.Flags().BoolVar(&o.JSON, "json", false, "print as JSON")
	cmd.Flags().BoolVar(&o.All, "all", false, "also ask the daemon binary for its build and the guest agents it carries")
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
	h := info.Hostd
	switch {
	case h.Err != "":
		fmt.Fprintf(o.IO.Out, "hostd:    unavailable: %s\n", h.Err)
	case !o.All:
		fmt.Fprintf(o.IO.Out, "hostd:    %s (its build and agents: cowork version --all)\n", h.Path)
		printKubeVirt(o, info)
		return nil
	case h.Commit != info.Commit || h.Version != info.Version:
		fmt.Fprintf(o.IO.Out, "hostd:    %s %s (commit %s): another build than this cowork; install the pair from one build\n", h.Path, h.Version, h.Commit)
	default:
		fmt.Fprintf(o.IO.Out, "hostd:    %s (same build)\n", h.Path)
	}
	if h.Err == "" && len(info.Agents) == 0 {
		fmt.Fprintln(o.IO.Out, "agents:   none embedded (a plain `go build`; use `make`)")
	}
	for _, a := range info.Agents {
		fmt.Fprintf(o.IO.Out, "agent:    linux/%s %.1f MiB sha256:%s\n", a.Arch, float64(a.Size)/(1<<20), a.SHA256[:16])
	}
	printKubeVirt(o, info)
	return nil
}

// printKubeVirt names cowork-hostd-kubevirt when it is installed, and
// with --all whether it is of this build.
func printKubeVirt(o *Options, info Info) {
	k := info.HostdKubeVirt
	switch {
	case k == nil:
	case k.Err != "":
		fmt.Fprintf(o.IO.Out, "kubevirt: %s: unavailable: %s\n", k.Path, k.Err)
	case !o.All:
		fmt.Fprintf(o.IO.Out, "kubevirt: %s\n", k.Path)
	case k.Commit != info.Commit || k.Version != info.Version:
		fmt.Fprintf(o.IO.Out, "kubevirt: %s %s (commit %s): another build than this cowork; build it from this one (`make kubevirt`)\n", k.Path, k.Version, k.Commit)
	default:
		fmt.Fprintf(o.IO.Out, "kubevirt: %s (same build)\n", k.Path)
	}
}
