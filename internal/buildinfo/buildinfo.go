// Package buildinfo holds the version stamped into both the host binary and
// the guest agent, so the host can tell whether a guest runs its own agent.
package buildinfo

import "runtime"

// Set by the Makefile through -ldflags -X; the defaults mark a plain `go build`.
var (
	Version = "0.1.0-dev"
	Commit  = "unknown"
)

// GoVersion is the Go toolchain the binary was built with.
func GoVersion() string { return runtime.Version() }
