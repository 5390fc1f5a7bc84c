// Command cowork-hostd is the daemon of one cowork instance: it owns the
// VM, its network stack, the credential relay, the audit log and the
// instance's lock, and serves the control and agent sockets. `cowork
// start` launches it; nobody else needs to. It also answers the questions
// that need the daemon's own dependencies (reading disk images with
// go-diskfs, the guest agents it embeds), so the CLI links none of them.
//
//	cowork-hostd run --name NAME        the daemon (cowork start runs it)
//	cowork-hostd inspect [--image P] [--kernel K]   what those files are, as JSON
//	cowork-hostd version                this build and its agents, as JSON
//	cowork-hostd fetch --url U [--sha256 S] --dir D   download into the cache
//	cowork-hostd verify --file F --sha256 S           check a file's digest
//	cowork-hostd disk --from IMAGE --to DISK --size N  make a raw disk
//	cowork-hostd golden key|clone|capture|ls|rm|prune  the golden disks (golden.go)
//	cowork-hostd egress --audit DIR [--listen ADDR] [--policy FILE]   the auditing proxy alone, for a cluster (egress.go)
//
// The image commands print their progress and result as JSON lines
// (hostdwire.Line).
//
// On macOS this is the binary signed with the virtualization entitlement,
// since it is the process that creates the VM.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"

	"github.com/coworkhq/cowork/hostd/fsjail"
	"github.com/coworkhq/cowork/image/imagecmd"
	"github.com/coworkhq/cowork/internal/hostdwire"
)

func main() {
	// The daemon re-executes this binary as the shim that starts the
	// workspace's file server confined.
	if len(os.Args) > 1 && os.Args[1] == fsjail.Arg {
		fmt.Fprintln(os.Stderr, "cowork-hostd:", fsjail.Main(os.Args[2:]))
		os.Exit(120)
	}
	os.Exit(Main(context.Background(), os.Args[1:], os.Stdout, os.Stderr))
}

// Main runs one command line and returns the exit code.
func Main(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprintln(stderr, usage)
		return hostdwire.ExitUsage
	}
	var err error
	switch args[0] {
	case "run":
		return run(ctx, args[1:], stderr)
	case "egress":
		return egress(ctx, args[1:], stderr)
	case "inspect":
		err = inspectCmd(args[1:], stdout)
	case "version":
		err = versionCmd(args[1:], stdout)
	case "golden":
		err = goldenCmd(args[1:], stdout)
	case "fetch", "verify", "disk":
		err = imagecmd.Run(ctx, args[0], args[1:], stdout)
	case "-h", "--help", "help":
		fmt.Fprintln(stdout, usage)
		return 0
	default:
		fmt.Fprintf(stderr, "cowork-hostd: unknown command %q; this binary is started by `cowork`, which must come from the same build (see `cowork version`)\n%s\n", args[0], usage)
		return hostdwire.ExitUsage
	}
	if err != nil {
		fmt.Fprintln(stderr, "cowork-hostd:", err)
		var imageUsage *imagecmd.UsageError
		if _, ok := err.(usageError); ok || errors.As(err, &imageUsage) {
			return hostdwire.ExitUsage
		}
		return 1
	}
	return 0
}

const usage = `usage: cowork-hostd run --name NAME | inspect [--image PATH] [--kernel PATH] | version
       cowork-hostd fetch --url URL [--sha256 HEX] --dir DIR | verify --file PATH --sha256 HEX
       cowork-hostd disk --from IMAGE --to DISK --size BYTES
       cowork-hostd golden key|clone|capture|ls|rm|prune ...
       cowork-hostd egress --audit DIR [--listen ADDR] [--policy FILE] [--upstream-proxy URL]
cowork-hostd is the daemon of a cowork instance; ` + "`cowork start`" + ` runs it.`

// usageError is a command line the binary does not take.
type usageError struct{ error }
