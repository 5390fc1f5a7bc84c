// Command sign signs a Mach-O binary ad hoc, in place, with an entitlements
// plist. It is the Linux stand-in for
//
//	codesign --force --entitlements entitlements.plist -s - bin/cowork
//
// which `make` runs on macOS: CI has no codesign, yet it should prove that the
// darwin binary can carry com.apple.security.virtualization, without which
// Virtualization.framework refuses to start a VM. It signs with
// github.com/anchore/quill and lives in its own module so that quill's
// dependencies stay out of cowork's go.mod. tools/machosig verifies the result.
//
// Usage (with go -C, relative paths are relative to tools/sign):
//
//	go -C tools/sign run . -entitlements ../../entitlements.plist ../../bin/cowork-darwin-arm64
package main

import (
	"bytes"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
)

// options are the command's flags and argument.
type options struct {
	entitlements string // path of the XML entitlements plist
	identifier   string // code signing identifier; the file name when empty
	binary       string // Mach-O file signed in place
}

func main() {
	opts, err := parseFlags(os.Args[1:], os.Stderr)
	if err != nil {
		if errors.Is(err, flag.ErrHelp) {
			os.Exit(0)
		}
		os.Exit(2)
	}
	if err := run(opts); err != nil {
		fmt.Fprintf(os.Stderr, "sign: %v\n", err)
		os.Exit(1)
	}
}

func parseFlags(args []string, stderr io.Writer) (options, error) {
	var opts options
	fs := flag.NewFlagSet("sign", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprintln(stderr, "usage: sign -entitlements FILE.plist [-identifier ID] MACHO-FILE")
		fmt.Fprintln(stderr, "signs MACHO-FILE ad hoc, in place, like `codesign --force --entitlements FILE.plist -s - MACHO-FILE`")
		fs.PrintDefaults()
	}
	fs.StringVar(&opts.entitlements, "entitlements", "", "XML entitlements plist to embed (required)")
	fs.StringVar(&opts.identifier, "identifier", "", "code signing identifier (default: the file name)")
	if err := fs.Parse(args); err != nil {
		return opts, err
	}
	if fs.NArg() != 1 || opts.entitlements == "" {
		fs.Usage()
		return opts, errors.New("usage")
	}
	opts.binary = fs.Arg(0)
	return opts, nil
}

func run(opts options) error {
	ent, err := os.ReadFile(opts.entitlements)
	if err != nil {
		return fmt.Errorf("read entitlements: %w", err)
	}
	// An empty file would sign without entitlements and hide the mistake.
	if len(bytes.TrimSpace(ent)) == 0 {
		return fmt.Errorf("entitlements file %s is empty", opts.entitlements)
	}
	id := opts.identifier
	if id == "" {
		id = filepath.Base(opts.binary) // codesign's default for a bare binary
	}
	return signFile(opts.binary, id, string(ent))
}
