package main

import (
	"fmt"
	"os"
	"path/filepath"

	macholibre "github.com/anchore/go-macholibre"
	"github.com/anchore/quill/quill/macho"
	"github.com/anchore/quill/quill/pki"
	"github.com/anchore/quill/quill/sign"
)

// signFile signs the Mach-O file at path ad hoc, in place; a universal file
// is split, each slice signed, and the slices put back together.
//
// It drives quill's macho and sign packages directly rather than calling
// quill.Sign, for two reasons: the top-level quill package pulls in the
// notarization client (the AWS SDK, a terminal UI; about 195 packages against
// 42, which made a cold build several times slower), and quill.Sign v0.7.1
// returns nil when patching the LC_CODE_SIGNATURE size fails, hiding a broken
// signature.
func signFile(path, identifier, entitlementsXML string) error {
	f, err := os.Open(path)
	if err != nil {
		return fmt.Errorf("open %s: %w", path, err)
	}
	universal := macholibre.IsUniversalMachoBinary(f)
	f.Close()
	if !universal {
		return signThin(path, identifier, entitlementsXML)
	}

	dir, err := os.MkdirTemp("", "sign-universal")
	if err != nil {
		return fmt.Errorf("temporary folder for the slices of %s: %w", path, err)
	}
	defer os.RemoveAll(dir)
	f, err = os.Open(path)
	if err != nil {
		return fmt.Errorf("open %s: %w", path, err)
	}
	slices, err := macholibre.Extract(f, dir)
	f.Close()
	if err != nil {
		return fmt.Errorf("split universal binary %s: %w", path, err)
	}
	var paths []string
	for _, s := range slices {
		if err := signThin(s.Path, identifier, entitlementsXML); err != nil {
			return fmt.Errorf("%s slice %s: %w", path, filepath.Base(s.Path), err)
		}
		paths = append(paths, s.Path)
	}
	if err := macholibre.Package(path, paths...); err != nil {
		return fmt.Errorf("reassemble universal binary %s: %w", path, err)
	}
	return nil
}

// signThin signs one thin Mach-O file in place, the way codesign -s - does:
// CS_ADHOC, an empty CMS blob, and the entitlements in special slot 5. Any
// existing signature (the Go linker signs darwin/arm64 binaries ad hoc) is
// replaced, as with --force.
func signThin(path, identifier, entitlementsXML string) error {
	m, err := macho.NewFile(path)
	if err != nil {
		return fmt.Errorf("open Mach-O %s: %w", path, err)
	}
	defer m.Close()

	if m.HasCodeSigningCmd() {
		if err := m.RemoveSigningContent(); err != nil {
			return fmt.Errorf("remove the existing signature: %w", err)
		}
	}
	if err := m.AddEmptyCodeSigningCmd(); err != nil {
		return fmt.Errorf("add LC_CODE_SIGNATURE: %w", err)
	}

	// No signer in the signing material means ad hoc.
	var adhoc pki.SigningMaterial

	// Two passes, as quill does: the first sizes the SuperBlob so the load
	// command and __LINKEDIT can be grown to hold it; the second hashes the
	// pages as they are after that patch, padded to the same size.
	size, blob, err := sign.GenerateSigningSuperBlob(identifier, m, adhoc, entitlementsXML, 0)
	if err != nil {
		return fmt.Errorf("size the signature: %w", err)
	}
	if err := sign.UpdateSuperBlobOffsetReferences(m, uint64(len(blob))); err != nil {
		return fmt.Errorf("grow __LINKEDIT for the signature: %w", err)
	}
	_, blob, err = sign.GenerateSigningSuperBlob(identifier, m, adhoc, entitlementsXML, size)
	if err != nil {
		return fmt.Errorf("generate the signature: %w", err)
	}
	cmd, _, err := m.CodeSigningCmd()
	if err != nil || cmd == nil {
		return fmt.Errorf("find LC_CODE_SIGNATURE after adding it: %v", err)
	}
	if uint64(cmd.DataSize) != uint64(len(blob)) {
		return fmt.Errorf("LC_CODE_SIGNATURE says %d bytes but the signature has %d", cmd.DataSize, len(blob))
	}
	if err := m.Patch(blob, len(blob), uint64(cmd.DataOffset)); err != nil {
		return fmt.Errorf("write the signature: %w", err)
	}
	return nil
}
