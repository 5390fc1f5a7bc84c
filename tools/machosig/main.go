// Command machosig verifies the embedded code signature of darwin binaries
// on any OS: every page hash, the entitlements blob's binding to the
// CodeDirectory, and that the entitlements grant what cowork needs
// (com.apple.security.virtualization by default). CI runs it on Linux after
// tools/sign, since codesign itself only exists on macOS.
//
// Usage:
//
//	go run ./tools/machosig [-entitlement KEY]... FILE...
package main

import (
	"flag"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/coworkhq/cowork/tools/machosig/codesig"
)

// defaultEntitlement is what Virtualization.framework requires of cowork.
const defaultEntitlement = "com.apple.security.virtualization"

// keyList is a repeatable -entitlement flag.
type keyList []string

func (k *keyList) String() string { return strings.Join(*k, ",") }

func (k *keyList) Set(v string) error {
	*k = append(*k, v)
	return nil
}

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

// run is main with its arguments and streams injected; it returns the exit
// code: 0 when every file verifies, 1 when one does not, 2 for usage errors.
func run(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("machosig", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var keys keyList
	fs.Var(&keys, "entitlement", "entitlement key that must be true (repeatable; default "+defaultEntitlement+")")
	fs.Usage = func() {
		fmt.Fprintln(stderr, "usage: machosig [-entitlement KEY]... FILE...")
		fmt.Fprintln(stderr, "verifies the code signature embedded in each Mach-O FILE")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		if err == flag.ErrHelp {
			return 0
		}
		return 2
	}
	if fs.NArg() == 0 {
		fs.Usage()
		return 2
	}
	if len(keys) == 0 {
		keys = keyList{defaultEntitlement}
	}
	code := 0
	for _, path := range fs.Args() {
		reports, err := codesig.Verify(path, codesig.Options{RequireTrue: keys})
		if err != nil {
			fmt.Fprintf(stderr, "machosig: %v\n", err)
			code = 1
			continue
		}
		for _, r := range reports {
			r.WriteSummary(stdout, path)
			if !r.OK() {
				code = 1
			}
		}
	}
	return code
}
