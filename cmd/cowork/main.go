// Command cowork runs Claude Code, and any command, in a disposable Linux VM.
// It is a thin client: each instance's VM is owned by its daemon,
// cowork-hostd, which cowork starts and then asks over a socket.
package main

import (
	"context"
	"os"

	"github.com/coworkhq/cowork/cmd/cowork/iostreams"
	"github.com/coworkhq/cowork/cmd/cowork/root"
	"github.com/coworkhq/cowork/internal/grpcpool"
)

func main() {
	grpcpool.InstallDefault() // before any gRPC, the agent's or hostd's: see grpcpool
	os.Exit(root.Main(context.Background(), iostreams.System(), os.Args[1:]))
}
