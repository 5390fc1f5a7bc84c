package codesig

import (
	"bytes"
	"debug/macho"
	"encoding/hex"
	"fmt"
	"os"
	"slices"
)

// Options says what Verify requires beyond a consistent signature.
type Options struct {
	// RequireTrue lists entitlement keys that must be present with the value
	// true: in the XML entitlements, and in the DER ones when they exist.
	RequireTrue []string
}

// Report is what Verify found in one Mach-O image (one per slice of a
// universal file). Problems is empty when everything checked out.
type Report struct {
	Arch        string
	Identifier  string
	CDHash      string // hex, as `codesign -dvvv` prints it
	Adhoc       bool
	Directories []DirectoryReport
	// Entitlements holds the XML entitlements, nil when there is no blob;
	// DEREntitlements the DER ones, nil when absent.
	Entitlements    Entitlements
	DEREntitlements Entitlements
	Notes           []string // facts worth printing that are not failures
	Problems        []string
}

// DirectoryReport describes one CodeDirectory and what matched in it.
type DirectoryReport struct {
	Slot         uint32
	HashType     string
	PageSize     uint64
	CodeLimit    uint64
	Pages        int      // code slots whose hash matched
	SpecialSlots []string // special slots whose blob hash matched, e.g. "entitlements (-5)"
}

// OK reports whether nothing failed.
func (r *Report) OK() bool { return len(r.Problems) == 0 }

func (r *Report) problem(format string, args ...any) {
	r.Problems = append(r.Problems, fmt.Sprintf(format, args...))
}

// Verify checks the embedded code signature of the Mach-O file at path, or of
// every slice when it is universal. The error is for a file that cannot be
// read as Mach-O at all; signature failures are Report.Problems.
func Verify(path string, opts Options) ([]*Report, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", path, err)
	}
	if len(data) < 4 || be.Uint32(data) != macho.MagicFat {
		r, err := VerifyImage(data, opts)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", path, err)
		}
		return []*Report{r}, nil
	}
	fat, err := macho.NewFatFile(bytes.NewReader(data))
	if err != nil {
		return nil, fmt.Errorf("%s: universal header: %w", path, err)
	}
	var reports []*Report
	for _, a := range fat.Arches {
		end := uint64(a.Offset) + uint64(a.Size)
		if end > uint64(len(data)) {
			return nil, fmt.Errorf("%s: %v slice ends at %d, past the end of the file", path, a.Cpu, end)
		}
		r, err := VerifyImage(data[a.Offset:end], opts)
		if err != nil {
			return nil, fmt.Errorf("%s: %v slice: %w", path, a.Cpu, err)
		}
		reports = append(reports, r)
	}
	return reports, nil
}

// VerifyImage checks one thin Mach-O image held in memory. Page offsets are
// relative to its start, as in a slice of a universal file.
func VerifyImage(data []byte, opts Options) (*Report, error) {
	f, err := macho.NewFile(bytes.NewReader(data))
	if err != nil {
		return nil, fmt.Errorf("parse Mach-O: %w", err)
	}
	r := &Report{Arch: archName(f.Cpu)}
	sig, dataOff, ok := signatureBytes(f, data, r)
	if !ok {
		return r, nil
	}
	blobs, err := parseSuperBlob(sig)
	if err != nil {
		r.problem("%v", err)
		return r, nil
	}
	checkMagics(blobs, r)

	var primary *codeDirectory
	for _, b := range blobs {
		if b.slot != slotCodeDirectory && (b.slot < slotAltCDFirst || b.slot > slotAltCDLast) {
			continue
		}
		cd, err := parseCodeDirectory(b.data)
		if err != nil {
			r.problem("CodeDirectory in slot %#x: %v", b.slot, err)
			continue
		}
		if b.slot == slotCodeDirectory {
			primary = cd
		}
		r.Directories = append(r.Directories, checkDirectory(b.slot, cd, data, dataOff, blobs, r))
	}
	if primary == nil {
		r.problem("no usable CodeDirectory (0xfade0c02) in slot 0")
	} else {
		r.Identifier = primary.identifier
		r.Adhoc = primary.flags&flagAdhoc != 0
		r.CDHash = hex.EncodeToString(digest(primary.hashType, primary.raw)[:20])
	}
	checkEntitlements(blobs, opts, r)
	return r, nil
}

// signatureBytes finds LC_CODE_SIGNATURE and returns the signature it points
// at and its file offset, recording a problem and false when there is none or
// it lies outside the file or __LINKEDIT.
func signatureBytes(f *macho.File, data []byte, r *Report) ([]byte, uint64, bool) {
	for _, l := range f.Loads {
		raw := l.Raw()
		if len(raw) < 16 || f.ByteOrder.Uint32(raw) != lcCodeSignature {
			continue
		}
		off, size := uint64(f.ByteOrder.Uint32(raw[8:])), uint64(f.ByteOrder.Uint32(raw[12:]))
		switch {
		case size == 0 || size > maxSignatureBytes:
			r.problem("LC_CODE_SIGNATURE size %d is implausible", size)
			return nil, 0, false
		case off+size > uint64(len(data)):
			r.problem("LC_CODE_SIGNATURE [%d, %d) runs past the end of the %d-byte image", off, off+size, len(data))
			return nil, 0, false
		}
		if seg := f.Segment("__LINKEDIT"); seg == nil {
			r.problem("no __LINKEDIT segment to hold the signature")
		} else if off < seg.Offset || off+size > seg.Offset+seg.Filesz {
			r.problem("signature [%d, %d) is not inside __LINKEDIT [%d, %d)", off, off+size, seg.Offset, seg.Offset+seg.Filesz)
		}
		return data[off : off+size], off, true
	}
	r.problem("not signed: no LC_CODE_SIGNATURE load command")
	return nil, 0, false
}

// checkMagics records a problem for a blob whose magic does not fit its slot,
// and notes the CMS blob's size (empty when ad hoc).
func checkMagics(blobs []blob, r *Report) {
	want := map[uint32]uint32{
		slotCodeDirectory:   magicCodeDirectory,
		slotRequirements:    magicRequirements,
		slotEntitlements:    magicEntitlements,
		slotDEREntitlements: magicDEREntitlements,
		slotCMSSignature:    magicBlobWrapper,
	}
	for s := uint32(slotAltCDFirst); s <= slotAltCDLast; s++ {
		want[s] = magicCodeDirectory
	}
	for _, b := range blobs {
		if w, ok := want[b.slot]; ok && b.magic != w {
			r.problem("blob in slot %#x has magic %#x, want %#x", b.slot, b.magic, w)
		}
		if b.slot == slotCMSSignature {
			r.Notes = append(r.Notes, fmt.Sprintf("CMS signature blob: %d bytes of signature data", len(b.data)-8))
		}
	}
}

// checkDirectory verifies one CodeDirectory: every page hash against the
// image and every special slot against its blob.
func checkDirectory(slot uint32, cd *codeDirectory, data []byte, sigOff uint64, blobs []blob, r *Report) DirectoryReport {
	d := DirectoryReport{Slot: slot, HashType: hashName(cd.hashType), PageSize: cd.pageSize(), CodeLimit: cd.codeLimit}
	where := fmt.Sprintf("CodeDirectory %#x", slot)
	if cd.codeLimit > sigOff {
		r.problem("%s: code limit %d reaches into the signature at %d", where, cd.codeLimit, sigOff)
		return d
	}
	if cd.codeLimit < sigOff {
		r.problem("%s: bytes [%d, %d) before the signature are not covered by any page hash", where, cd.codeLimit, sigOff)
	}
	ps := d.PageSize
	if ps == 0 {
		ps = 1 // empty code: no pages
	}
	if want := (cd.codeLimit + ps - 1) / ps; uint64(cd.nCodeSlots) != want {
		r.problem("%s: %d code slots, but a code limit of %d in %d-byte pages needs %d", where, cd.nCodeSlots, cd.codeLimit, ps, want)
	}
	var bad []uint32
	for i := uint32(0); i < cd.nCodeSlots && uint64(i)*ps < cd.codeLimit; i++ {
		start := uint64(i) * ps
		end := min(start+ps, cd.codeLimit)
		if bytes.Equal(digest(cd.hashType, data[start:end]), cd.codeSlot(i)) {
			d.Pages++
		} else {
			bad = append(bad, i)
		}
	}
	for j, i := range bad {
		if j == 5 {
			r.problem("%s: %d more page hash mismatches", where, len(bad)-j)
			break
		}
		r.problem("%s: page %d (file bytes [%d, %d)) does not match its hash", where, i, uint64(i)*ps, min(uint64(i+1)*ps, cd.codeLimit))
	}

	embedded := map[uint32]bool{}
	for _, b := range blobs {
		if b.slot == slotCodeDirectory || b.slot >= slotAltCDFirst {
			continue
		}
		embedded[b.slot] = true
		name := fmt.Sprintf("%s (-%d)", slotName(b.slot), b.slot)
		if b.slot > cd.nSpecialSlots {
			r.problem("%s: %s blob is not bound: the directory has only %d special slots", where, name, cd.nSpecialSlots)
			continue
		}
		if !bytes.Equal(digest(cd.hashType, b.data), cd.specialSlot(b.slot)) {
			r.problem("%s: special slot -%d does not match the hash of the %s blob", where, b.slot, slotName(b.slot))
			continue
		}
		d.SpecialSlots = append(d.SpecialSlots, name)
	}
	zero := make([]byte, cd.hashSize)
	for s := uint32(1); s <= cd.nSpecialSlots; s++ {
		if !embedded[s] && !bytes.Equal(cd.specialSlot(s), zero) {
			r.Notes = append(r.Notes, fmt.Sprintf("%s: special slot -%d (%s) hashes something outside the signature; not checked", where, s, slotName(s)))
		}
	}
	return d
}

// checkEntitlements parses the entitlements blobs and checks the required keys.
func checkEntitlements(blobs []blob, opts Options, r *Report) {
	for _, b := range blobs {
		var err error
		switch b.slot {
		case slotEntitlements:
			r.Entitlements, err = parseXMLEntitlements(b.data[8:])
		case slotDEREntitlements:
			r.DEREntitlements, err = parseDEREntitlements(b.data[8:])
		}
		if err != nil {
			r.problem("%v", err)
		}
	}
	if len(opts.RequireTrue) > 0 && r.Entitlements == nil {
		r.problem("no XML entitlements blob (0xfade7171), so %v cannot be granted", opts.RequireTrue)
		return
	}
	for _, key := range opts.RequireTrue {
		if got := r.Entitlements[key]; got != "true" {
			r.problem("entitlement %s is %s in the XML entitlements, want true", key, kindOrMissing(got))
		}
		if r.DEREntitlements == nil {
			continue
		}
		if got := r.DEREntitlements[key]; got != "true" {
			r.problem("entitlement %s is %s in the DER entitlements, want true", key, kindOrMissing(got))
		}
	}
}

func kindOrMissing(kind string) string {
	if kind == "" {
		return "missing"
	}
	return kind
}

func slotName(s uint32) string {
	switch s {
	case slotInfo:
		return "Info.plist"
	case slotRequirements:
		return "requirements"
	case slotResourceDir:
		return "resources"
	case slotEntitlements:
		return "entitlements"
	case slotDEREntitlements:
		return "DER entitlements"
	case slotCMSSignature:
		return "CMS signature"
	}
	return fmt.Sprintf("slot %d", s)
}

func archName(c macho.Cpu) string {
	switch c {
	case macho.CpuArm64:
		return "arm64"
	case macho.CpuAmd64:
		return "x86_64"
	}
	return c.String()
}

// SortedKeys lists entitlement keys in order, for stable output.
func (e Entitlements) SortedKeys() []string {
	keys := make([]string, 0, len(e))
	for k := range e {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}
