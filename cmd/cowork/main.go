// Command cowork runs Claude Code, and any command, in a disposable Linux VM.
package main

import (
	"context"
	"fmt"
	"os"

	"github.com/coworkhq/cowork/cmd/cowork/iostreams"
	"github.com/coworkhq/cowork/cmd/cowork/root"
	"github.com/coworkhq/cowork/hostd/fsjail"
	"github.com/coworkhq/cowork/internal/grpcpool"
)

func main() {
	// hostd re-executes this binary as the shim that starts the workspace's
	// file server confined; it is no command a user runs.
	if len(os.Args) > 1 && os.Args[1] == fsjail.Arg {
		fmt.Fprintln(os.Stderr, "cowork:", fsjail.Main(os.Args[2:]))
		os.Exit(120)
	}
	grpcpool.InstallDefault() // before any gRPC, the agent's or hostd's: see grpcpool
	os.Exit(root.Main(context.Background(), iostreams.System(), os.Args[1:]))
}
