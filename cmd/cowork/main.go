// Command cowork runs Claude Code, and any command, in a disposable Linux VM.
// It is a thin client: each instance's VM is owned by its daemon,
// cowork-hostd, which cowork starts and then asks over a socket.

// The runtime would start a goroutine to follow the cgroup's CPU limit
// and re-read it from sysmon: of no use to a command that lives for
// milliseconds (or a shell session), and about 1% of a `cowork exec`.
//
//go:debug updatemaxprocs=0
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
