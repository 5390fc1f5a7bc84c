package hostdwire

import (
	"flag"
	"fmt"
	"io"
	"runtime"

	"github.com/coworkhq/cowork/internal/buildinfo"
)

// Parse reads a daemon subcommand's flags (cowork-hostd's and
// cowork-hostd-kubevirt's); no positional arguments are taken. Its error
// is the command line's: the caller exits with ExitUsage.
func Parse(fs *flag.FlagSet, args []string) error {
	fs.SetOutput(io.Discard)
	if err := fs.Parse(args); err != nil {
		return fmt.Errorf("%s: %w", fs.Name(), err)
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("%s: unexpected argument %q", fs.Name(), fs.Arg(0))
	}
	return nil
}

// This is the running binary's build, carrying agents.
func This(agents []Agent) Version {
	return Version{
		Version:  buildinfo.Version,
		Commit:   buildinfo.Commit,
		Go:       buildinfo.GoVersion(),
		Platform: runtime.GOOS + "/" + runtime.GOARCH,
		Agents:   agents,
	}
}
