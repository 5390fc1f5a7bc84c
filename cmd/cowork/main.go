// Command cowork runs Claude Code, and any command, in a disposable Linux VM.
// It is a thin client: each instance's VM is owned by its daemon,
// cowork-hostd, which cowork starts and then asks over a socket.
package main

import (
	"context"
	"os"

	"github.com/coworkhq/cowork/cmd/cowork/iostreams"
	"github.com/coworkhq/cowork/cmd/cowork/root"
)

func main() {
	os.Exit(root.Main(context.Background(), iostreams.System(), os.Args[1:]))
}
