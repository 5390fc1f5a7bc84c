// Command cowork runs Claude Code, and any command, in a disposable Linux VM.
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
