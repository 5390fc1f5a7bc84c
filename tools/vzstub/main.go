// Command vzstub lets Linux prove that cowork's macOS code type-checks
// against the exact API of github.com/Code-Hex/vz/v3.
//
// vz is cgo and Objective-C: it only compiles on a Mac with the macOS SDK. So
// vzstub writes a copy of the pinned module in which every function body is
// panic("vzstub"), `import "C"` is gone and every C type is a Go stand-in
// (ctypes.go): C number types become the Go numbers cgo would give them on
// darwin/arm64 (C.int is int32, NSUInteger uint64), so conversions and
// arithmetic still type-check, and every other C type an opaque empty
// struct. The copy keeps every declaration, so cowork's *_darwin.go files
// can be vetted and built for darwin/arm64 with CGO_ENABLED=0 against it.
// hack/darwin-stub.sh (for make check-darwin and make lint) swaps vz for
// the copy with a copy of go.mod outside the tree (-modfile) carrying one
// replace directive; not a go.work, because workspace mode resolves the
// module graph differently (while cowork linked gRPC it tripped over an
// ambiguous import, genproto's googleapis/rpc/status, that a normal build
// never saw).
//
// A stub is only worth something while it has the real API, so `compare`
// type-checks the real source (cgo faked) and the stub, and fails on any
// difference in their exported surface.
//
// Usage:
//
//	vzstub locate   [-module github.com/Code-Hex/vz/v3]   # prints the pinned module's directory
//	vzstub generate -src DIR -out DIR                       # writes the stub module
//	vzstub compare  -real DIR -stub DIR                     # diffs the exported surfaces
package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
)

// vzModule is the module cowork pins; locate looks up its directory.
const vzModule = "github.com/Code-Hex/vz/v3"

func main() {
	if err := run(os.Args[1:], os.Stdout, os.Stderr); err != nil {
		fmt.Fprintln(os.Stderr, "vzstub:", err)
		var u usageError
		if errors.As(err, &u) {
			os.Exit(2)
		}
		os.Exit(1)
	}
}

// usageError is a mistake on the command line (exit code 2).
type usageError struct{ msg string }

func (e usageError) Error() string { return e.msg }

// run dispatches a subcommand; stdout gets results, stderr progress.
func run(args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		return usageError{"missing subcommand: locate, generate or compare"}
	}
	fs := flag.NewFlagSet("vzstub "+args[0], flag.ContinueOnError)
	fs.SetOutput(stderr)
	switch args[0] {
	case "locate":
		module := fs.String("module", vzModule, "module path, at the version the current module requires")
		if err := parseFlags(fs, args[1:]); err != nil {
			return err
		}
		dir, version, err := locateModule(*module)
		if err != nil {
			return err
		}
		fmt.Fprintf(stderr, "vzstub: %s@%s is in %s\n", *module, version, dir)
		fmt.Fprintln(stdout, dir)
		return nil
	case "generate":
		src := fs.String("src", "", "source directory of the vz module (see locate)")
		out := fs.String("out", "", "directory to write the stub module into (replaced if it holds an earlier stub)")
		if err := parseFlags(fs, args[1:]); err != nil {
			return err
		}
		if *src == "" || *out == "" {
			return usageError{"generate needs -src and -out"}
		}
		res, err := generate(*src, *out)
		if err != nil {
			return err
		}
		fmt.Fprintf(stdout, "stubbed %s: %d packages, %d files, %d function bodies, %d C types\n",
			res.module, len(res.packages), res.files, res.bodies, res.ctypes)
		return nil
	case "compare":
		real := fs.String("real", "", "source directory of the real vz module")
		stub := fs.String("stub", "", "directory of the generated stub module")
		if err := parseFlags(fs, args[1:]); err != nil {
			return err
		}
		if *real == "" || *stub == "" {
			return usageError{"compare needs -real and -stub"}
		}
		rep, err := compareModules(*real, *stub, depsEnv)
		if err != nil {
			return err
		}
		if len(rep.diffs) > 0 {
			for _, d := range rep.diffs {
				fmt.Fprintln(stderr, d)
			}
			return fmt.Errorf("stub surface differs from the real package in %d places; regenerate the stub or fix vzstub", len(rep.diffs))
		}
		fmt.Fprintf(stdout, "surfaces match: %d packages, %d exported objects, methods and fields (%d of them involve C types)\n",
			rep.packages, rep.entries, rep.ctyped)
		return nil
	}
	return usageError{fmt.Sprintf("unknown subcommand %q: want locate, generate or compare", args[0])}
}

func parseFlags(fs *flag.FlagSet, args []string) error {
	if err := fs.Parse(args); err != nil {
		return usageError{err.Error()}
	}
	if fs.NArg() > 0 {
		return usageError{fmt.Sprintf("unexpected arguments: %v", fs.Args())}
	}
	return nil
}
