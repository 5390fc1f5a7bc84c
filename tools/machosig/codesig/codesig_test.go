package codesig

import (
	"bytes"
	"debug/macho"
	"os"
	"strconv"
	"strings"
	"testing"

	"github.com/coworkhq/cowork/tools/machosig/internal/sigtest"
)

const virtualization = "com.apple.security.virtualization"

func TestMain(m *testing.M) {
	code := m.Run()
	sigtest.Cleanup()
	os.Exit(code)
}

var requireVirt = Options{RequireTrue: []string{virtualization}}

// verifyOne verifies a thin binary and returns its only report.
func verifyOne(t *testing.T, path string) *Report {
	t.Helper()
	reports, err := Verify(path, requireVirt)
	if err != nil {
		t.Fatalf("Verify: %v", err)
	}
	if len(reports) != 1 {
		t.Fatalf("got %d reports for a thin binary", len(reports))
	}
	return reports[0]
}

func summary(r *Report) string {
	var b strings.Builder
	r.WriteSummary(&b, "test")
	return b.String()
}

func wantProblem(t *testing.T, r *Report, substr string) {
	t.Helper()
	for _, p := range r.Problems {
		if strings.Contains(p, substr) {
			return
		}
	}
	t.Errorf("no problem mentions %q:\n%s", substr, summary(r))
}

func TestQuillSignatureWithRepoEntitlementsVerifies(t *testing.T) {
	r := verifyOne(t, sigtest.Sign(t, sigtest.Entitlements()))
	if !r.OK() {
		t.Fatalf("signed binary does not verify:\n%s", summary(r))
	}
	if r.Arch != "arm64" || !r.Adhoc || r.Identifier != "hello" || len(r.CDHash) != 40 {
		t.Errorf("arch %q, adhoc %v, identifier %q, cdhash %q; want arm64, ad hoc, hello, 40 hex digits", r.Arch, r.Adhoc, r.Identifier, r.CDHash)
	}
	if len(r.Directories) != 1 {
		t.Fatalf("got %d CodeDirectories, want 1:\n%s", len(r.Directories), summary(r))
	}
	d := r.Directories[0]
	if d.HashType != "SHA-256" || d.PageSize != 4096 || uint64(d.Pages) != (d.CodeLimit+4095)/4096 {
		t.Errorf("directory %+v: want SHA-256, 4096-byte pages, every page matched", d)
	}
	if !strings.Contains(strings.Join(d.SpecialSlots, ","), "entitlements (-5)") {
		t.Errorf("entitlements slot not verified: %v", d.SpecialSlots)
	}
	if r.Entitlements[virtualization] != "true" {
		t.Errorf("entitlements %v, want %s=true", r.Entitlements, virtualization)
	}
}

// The Go linker signs darwin/arm64 binaries ad hoc with its own code: its
// page hashes matching is a check of this verifier against a second,
// independent signer. It has no entitlements, so the requirement fails.
func TestLinkerSignatureHashesMatchButLacksEntitlements(t *testing.T) {
	hello, _, _ := sigtest.Binaries(t)
	r := verifyOne(t, hello)
	if len(r.Problems) != 1 {
		t.Fatalf("want exactly the missing-entitlements problem:\n%s", summary(r))
	}
	wantProblem(t, r, "no XML entitlements blob")
	if len(r.Directories) != 1 || r.Directories[0].Pages == 0 {
		t.Fatalf("no page hashes verified:\n%s", summary(r))
	}
}

func TestUnsignedBinaryFails(t *testing.T) {
	_, amd64, _ := sigtest.Binaries(t)
	r := verifyOne(t, amd64)
	wantProblem(t, r, "no LC_CODE_SIGNATURE")
}

func TestFlippedCodeByteFails(t *testing.T) {
	bin := sigtest.Sign(t, sigtest.Entitlements())
	f, err := macho.Open(bin)
	if err != nil {
		t.Fatal(err)
	}
	text := f.Section("__text")
	f.Close()
	if text == nil {
		t.Fatal("no __text section")
	}
	off := int64(text.Offset) + 4096 + 123
	data, err := os.ReadFile(bin)
	if err != nil {
		t.Fatal(err)
	}
	data[off] ^= 0x01
	if err := os.WriteFile(bin, data, 0o755); err != nil {
		t.Fatal(err)
	}
	r := verifyOne(t, bin)
	if r.OK() {
		t.Fatalf("verification passed after flipping byte %d:\n%s", off, summary(r))
	}
	page := off / 4096
	wantProblem(t, r, "page "+strconv.FormatInt(page, 10)+" ")
	if len(r.Problems) != 1 {
		t.Errorf("one flipped byte should fail one page only:\n%s", summary(r))
	}
}

func TestTamperedEntitlementsBlobFails(t *testing.T) {
	bin := sigtest.Sign(t, sigtest.Entitlements())
	data, err := os.ReadFile(bin)
	if err != nil {
		t.Fatal(err)
	}
	// The entitlements live only in the signature, past every hashed page,
	// so only the special slot can catch a change to them.
	i := bytes.LastIndex(data, []byte("<true/>"))
	if i < 0 {
		t.Fatal("no <true/> in the signed binary")
	}
	copy(data[i:], "<fals/>")
	if err := os.WriteFile(bin, data, 0o755); err != nil {
		t.Fatal(err)
	}
	r := verifyOne(t, bin)
	wantProblem(t, r, "special slot -5 does not match")
	wantProblem(t, r, "is fals in the XML entitlements")
}

func TestSignatureWithoutTheEntitlementFails(t *testing.T) {
	for name, body := range map[string]string{
		"other key":  "\t<key>com.apple.security.network.client</key>\n\t<true/>",
		"false":      "\t<key>" + virtualization + "</key>\n\t<false/>",
		"string":     "\t<key>" + virtualization + "</key>\n\t<string>true</string>",
		"nested":     "\t<key>x</key>\n\t<dict><key>" + virtualization + "</key><true/></dict>",
		"empty dict": "",
	} {
		t.Run(name, func(t *testing.T) {
			r := verifyOne(t, sigtest.Sign(t, sigtest.WritePlist(t, body)))
			if r.OK() {
				t.Fatalf("passed without %s=true:\n%s", virtualization, summary(r))
			}
			wantProblem(t, r, "entitlement "+virtualization)
			if len(r.Problems) != 1 {
				t.Errorf("hashes should still match:\n%s", summary(r))
			}
		})
	}
}

// cowork may ship a universal binary: each slice carries its own signature,
// with page offsets relative to the slice.
func TestUniversalBinary(t *testing.T) {
	arm64, amd64, _ := sigtest.Binaries(t)
	bin := sigtest.Universal(t, arm64, amd64)
	sigtest.SignFile(t, bin, sigtest.Entitlements())
	reports, err := Verify(bin, requireVirt)
	if err != nil {
		t.Fatal(err)
	}
	if len(reports) != 2 {
		t.Fatalf("got %d reports, want one per slice", len(reports))
	}
	for _, r := range reports {
		if !r.OK() {
			t.Errorf("slice does not verify:\n%s", summary(r))
		}
	}
	if reports[0].Arch != "arm64" || reports[1].Arch != "x86_64" {
		t.Errorf("arches %s, %s; want arm64, x86_64", reports[0].Arch, reports[1].Arch)
	}

	// Flip a byte in the middle of the second slice: only it fails.
	f, err := macho.OpenFat(bin)
	if err != nil {
		t.Fatal(err)
	}
	off := int64(f.Arches[1].Offset) + 8192
	f.Close()
	data, err := os.ReadFile(bin)
	if err != nil {
		t.Fatal(err)
	}
	data[off] ^= 0x80
	if err := os.WriteFile(bin, data, 0o755); err != nil {
		t.Fatal(err)
	}
	reports, err = Verify(bin, requireVirt)
	if err != nil {
		t.Fatal(err)
	}
	if !reports[0].OK() || reports[1].OK() {
		t.Errorf("after flipping a byte of the x86_64 slice: arm64 OK %v, x86_64 OK %v; want true, false", reports[0].OK(), reports[1].OK())
	}
	wantProblem(t, reports[1], "page 2 ")
}

// Corrupting the signature must give problems, never a panic.
func TestCorruptSignaturesDoNotPanic(t *testing.T) {
	bin := sigtest.Sign(t, sigtest.Entitlements())
	data, err := os.ReadFile(bin)
	if err != nil {
		t.Fatal(err)
	}
	f, err := macho.NewFile(bytes.NewReader(data))
	if err != nil {
		t.Fatal(err)
	}
	sigOff := 0
	for _, l := range f.Loads {
		if raw := l.Raw(); f.ByteOrder.Uint32(raw) == lcCodeSignature {
			sigOff = int(f.ByteOrder.Uint32(raw[8:]))
		}
	}
	if sigOff == 0 {
		t.Fatal("no LC_CODE_SIGNATURE")
	}
	corrupt := func(at int, v byte) (*Report, error) {
		bad := bytes.Clone(data)
		for k := range 4 {
			bad[sigOff+at+k] = v
		}
		return VerifyImage(bad, requireVirt)
	}
	// Every header field of the SuperBlob, its index and the CodeDirectory:
	// whatever the result, no panic.
	for at := 0; at < 400; at += 2 {
		for _, v := range []byte{0x00, 0x7f, 0xff} {
			corrupt(at, v)
		}
	}
	// Fields that must be caught: SuperBlob magic, length, first index
	// offset, CodeDirectory magic, hashOffset, nCodeSlots.
	for _, at := range []int{0, 4, 16, 44, 44 + 16, 44 + 28} {
		if r, err := corrupt(at, 0x7f); err == nil && r.OK() {
			t.Errorf("corrupting signature bytes %d..%d still verifies", at, at+3)
		}
	}
	if r, err := VerifyImage(data[:sigOff+100], requireVirt); err == nil && r.OK() {
		t.Error("truncated signature verifies")
	}
}
