// Package codesig reads and checks the embedded code signature of a Mach-O
// file, as described by Apple's public cs_blobs.h: an LC_CODE_SIGNATURE load
// command points at a big-endian SuperBlob whose CodeDirectory holds a hash of
// every page of the file before the signature and of each special blob
// (entitlements, requirements). It uses only the standard library so that the
// main module can check, on Linux, what tools/sign (quill) or codesign wrote,
// without trusting the signer's own reader.
package codesig

import (
	"encoding/binary"
	"fmt"
)

// Blob magics (cs_blobs.h CSMAGIC_*).
const (
	magicEmbeddedSignature = 0xfade0cc0
	magicCodeDirectory     = 0xfade0c02
	magicRequirements      = 0xfade0c01
	magicEntitlements      = 0xfade7171
	magicDEREntitlements   = 0xfade7172
	magicBlobWrapper       = 0xfade0b01 // the CMS signature; empty when ad hoc
)

// SuperBlob slot types (CSSLOT_*). A special slot's hash sits at index
// -type in the CodeDirectory's hash array.
const (
	slotCodeDirectory   = 0
	slotInfo            = 1
	slotRequirements    = 2
	slotResourceDir     = 3
	slotEntitlements    = 5
	slotDEREntitlements = 7
	slotAltCDFirst      = 0x1000
	slotAltCDLast       = 0x1004
	slotCMSSignature    = 0x10000
)

// Hash types (CS_HASHTYPE_*).
const (
	hashSHA1          = 1
	hashSHA256        = 2
	hashSHA256Trunc   = 3
	hashSHA384        = 4
	flagAdhoc         = 0x2 // CS_ADHOC
	lcCodeSignature   = 0x1d
	maxSignatureBytes = 64 << 20
)

var be = binary.BigEndian

// blob is one entry of the SuperBlob: its slot type and its bytes, header
// (magic and length) included, which is what special slots hash.
type blob struct {
	slot  uint32
	magic uint32
	data  []byte
}

// parseSuperBlob splits an embedded signature into its blobs, checking that
// every index entry and length stays inside the signature.
func parseSuperBlob(sig []byte) ([]blob, error) {
	if len(sig) < 12 {
		return nil, fmt.Errorf("signature of %d bytes is too short for a SuperBlob header", len(sig))
	}
	if m := be.Uint32(sig); m != magicEmbeddedSignature {
		return nil, fmt.Errorf("signature magic is %#x, want embedded signature %#x", m, magicEmbeddedSignature)
	}
	length, count := be.Uint32(sig[4:]), be.Uint32(sig[8:])
	if length < 12 || uint64(length) > uint64(len(sig)) {
		return nil, fmt.Errorf("SuperBlob length %d is outside the %d signature bytes", length, len(sig))
	}
	sig = sig[:length]
	if uint64(count)*8+12 > uint64(length) {
		return nil, fmt.Errorf("SuperBlob index of %d entries does not fit in %d bytes", count, length)
	}
	blobs := make([]blob, 0, count)
	for i := range count {
		entry := sig[12+8*i:]
		slot, off := be.Uint32(entry), be.Uint32(entry[4:])
		if uint64(off)+8 > uint64(length) {
			return nil, fmt.Errorf("blob for slot %#x at offset %d is outside the SuperBlob", slot, off)
		}
		magic, blen := be.Uint32(sig[off:]), be.Uint32(sig[off+4:])
		if blen < 8 || uint64(off)+uint64(blen) > uint64(length) {
			return nil, fmt.Errorf("blob for slot %#x (magic %#x) of length %d at offset %d overruns the SuperBlob", slot, magic, blen, off)
		}
		blobs = append(blobs, blob{slot: slot, magic: magic, data: sig[off : off+blen]})
	}
	return blobs, nil
}

// codeDirectory is the part of a CodeDirectory blob the checks need.
type codeDirectory struct {
	raw           []byte // the whole blob: its hash is the cdhash
	version       uint32
	flags         uint32
	hashOffset    uint32
	identifier    string
	nSpecialSlots uint32
	nCodeSlots    uint32
	codeLimit     uint64
	hashSize      int
	hashType      uint8
	pageSizeLog2  uint8
	execSegFlags  uint64
}

// parseCodeDirectory decodes a CodeDirectory blob (magic 0xfade0c02) and
// checks that its identifier and hash array lie inside it.
func parseCodeDirectory(b []byte) (*codeDirectory, error) {
	const fixed = 44 // through spare2, present in every version
	if len(b) < fixed {
		return nil, fmt.Errorf("CodeDirectory of %d bytes is shorter than its %d-byte header", len(b), fixed)
	}
	if m := be.Uint32(b); m != magicCodeDirectory {
		return nil, fmt.Errorf("CodeDirectory magic is %#x, want %#x", m, magicCodeDirectory)
	}
	cd := &codeDirectory{
		raw:           b,
		version:       be.Uint32(b[8:]),
		flags:         be.Uint32(b[12:]),
		hashOffset:    be.Uint32(b[16:]),
		nSpecialSlots: be.Uint32(b[24:]),
		nCodeSlots:    be.Uint32(b[28:]),
		codeLimit:     uint64(be.Uint32(b[32:])),
		hashSize:      int(b[36]),
		hashType:      b[37],
		pageSizeLog2:  b[39],
	}
	// codeLimit64 (version 0x20300) replaces codeLimit for files over 4 GiB.
	if cd.version >= 0x20300 && len(b) >= 64 {
		if l64 := be.Uint64(b[56:]); l64 != 0 {
			cd.codeLimit = l64
		}
	}
	if cd.version >= 0x20400 && len(b) >= 88 {
		cd.execSegFlags = be.Uint64(b[80:])
	}
	identOff := be.Uint32(b[20:])
	if identOff >= uint32(len(b)) {
		return nil, fmt.Errorf("CodeDirectory identifier offset %d is outside its %d bytes", identOff, len(b))
	}
	ident := b[identOff:]
	for i, c := range ident {
		if c == 0 {
			ident = ident[:i]
			break
		}
	}
	cd.identifier = string(ident)
	if want := hashSizeOf(cd.hashType); want == 0 {
		return nil, fmt.Errorf("CodeDirectory hash type %d is not one this checker knows (1 SHA-1, 2 SHA-256, 3 SHA-256/20, 4 SHA-384)", cd.hashType)
	} else if cd.hashSize != want {
		return nil, fmt.Errorf("CodeDirectory hash size %d does not match hash type %d (%d bytes)", cd.hashSize, cd.hashType, want)
	}
	if cd.pageSizeLog2 > 30 {
		return nil, fmt.Errorf("CodeDirectory page size 2^%d is not plausible", cd.pageSizeLog2)
	}
	lo := int64(cd.hashOffset) - int64(cd.nSpecialSlots)*int64(cd.hashSize)
	hi := int64(cd.hashOffset) + int64(cd.nCodeSlots)*int64(cd.hashSize)
	if lo < fixed || hi > int64(len(b)) {
		return nil, fmt.Errorf("CodeDirectory hash array [%d, %d) is outside its %d bytes", lo, hi, len(b))
	}
	return cd, nil
}

// codeSlot is the stored hash of page i.
func (cd *codeDirectory) codeSlot(i uint32) []byte {
	off := cd.hashOffset + i*uint32(cd.hashSize)
	return cd.raw[off : off+uint32(cd.hashSize)]
}

// specialSlot is the stored hash of special slot type n, at index -n.
func (cd *codeDirectory) specialSlot(n uint32) []byte {
	off := cd.hashOffset - n*uint32(cd.hashSize)
	return cd.raw[off : off+uint32(cd.hashSize)]
}

// pageSize is the size of the pages codeSlot hashes; 0 in the blob means the
// whole of the code is one page.
func (cd *codeDirectory) pageSize() uint64 {
	if cd.pageSizeLog2 == 0 {
		return cd.codeLimit
	}
	return 1 << cd.pageSizeLog2
}
