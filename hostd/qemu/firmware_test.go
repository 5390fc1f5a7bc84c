package qemu

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// fakeFirmware makes files named like the packages' in a temp dir and
// returns candidates in the same order as the real list.
func fakeFirmware(t *testing.T, files map[string][]byte) (dir string, arm []efiFirmware) {
	t.Helper()
	dir = t.TempDir()
	for name, b := range files {
		p := filepath.Join(dir, name)
		os.MkdirAll(filepath.Dir(p), 0o755)
		if err := os.WriteFile(p, b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	at := func(n string) string { return filepath.Join(dir, n) }
	return dir, []efiFirmware{
		{at("AAVMF/AAVMF_CODE.fd"), at("AAVMF/AAVMF_VARS.fd")},
		{at("qemu-efi-aarch64/QEMU_EFI.fd"), ""},
	}
}

func TestFirmwarePrefersTheVarsTemplate(t *testing.T) {
	code := bytes.Repeat([]byte{1}, armFlashSize)
	tmpl := append([]byte("_FVH varstore"), make([]byte, armFlashSize-13)...)
	dir, cands := fakeFirmware(t, map[string][]byte{
		"AAVMF/AAVMF_CODE.fd": code, "AAVMF/AAVMF_VARS.fd": tmpl, "qemu-efi-aarch64/QEMU_EFI.fd": []byte("efi"),
	})
	f, err := findFirmware("arm64", cands)
	if err != nil || f != cands[0] {
		t.Fatalf("picked %+v, %v", f, err)
	}
	vars := filepath.Join(dir, "inst", "efi-vars")
	os.MkdirAll(filepath.Dir(vars), 0o700)
	got, err := prepareFirmware("arm64", f, vars, t.TempDir())
	if err != nil || got != f.code {
		t.Fatalf("code %s, %v", got, err)
	}
	if b, _ := os.ReadFile(vars); !bytes.Equal(b, tmpl) {
		t.Error("the variable store is not the VARS template")
	}
	// Later boots keep what the guest stored.
	os.WriteFile(vars, []byte("guest's variables"), 0o600)
	prepareFirmware("arm64", f, vars, t.TempDir())
	if b, _ := os.ReadFile(vars); string(b) != "guest's variables" {
		t.Error("the variable store was reset")
	}
}

// Only QEMU_EFI.fd: never the code image as the variable store (which the
// old code did), but a blank 64 MiB store and the code padded to 64 MiB.
func TestFirmwareQemuEFIOnly(t *testing.T) {
	dir, cands := fakeFirmware(t, map[string][]byte{
		"qemu-efi-aarch64/QEMU_EFI.fd": []byte("efi code"),
		"AAVMF/AAVMF_VARS.fd":          []byte("a template without its code"),
	})
	f, err := findFirmware("arm64", cands)
	if err != nil || f != cands[1] {
		t.Fatalf("picked %+v, %v", f, err)
	}
	run := t.TempDir()
	vars := filepath.Join(dir, "efi-vars")
	code, err := prepareFirmware("arm64", f, vars, run)
	if err != nil {
		t.Fatal(err)
	}
	if code != filepath.Join(run, "efi-code.fd") {
		t.Errorf("code %s, want a padded copy in the run dir", code)
	}
	b, _ := os.ReadFile(code)
	if len(b) != armFlashSize || !bytes.HasPrefix(b, []byte("efi code")) {
		t.Errorf("padded code: %d bytes", len(b))
	}
	v, _ := os.ReadFile(vars)
	if len(v) != armFlashSize || bytes.Count(v, []byte{0}) != armFlashSize {
		t.Errorf("variable store: %d bytes, want 64 MiB of zeros", len(v))
	}
}

func TestFirmwareMissing(t *testing.T) {
	_, cands := fakeFirmware(t, nil)
	_, err := findFirmware("arm64", cands)
	if err == nil || !strings.Contains(err.Error(), "apt install qemu-efi-aarch64") {
		t.Errorf("no firmware: %v", err)
	}
	// amd64 without a template has no blank fallback.
	dir := t.TempDir()
	code := filepath.Join(dir, "OVMF_CODE.fd")
	os.WriteFile(code, []byte("x"), 0o644)
	if _, err := prepareFirmware("amd64", efiFirmware{code: code}, filepath.Join(dir, "vars"), dir); err == nil {
		t.Error("amd64 firmware without a variable template")
	}
}

// The real list pairs each code image with its own package's template.
func TestFirmwareListPairs(t *testing.T) {
	for arch, list := range firmware {
		for _, f := range list {
			if f.vars != "" && filepath.Dir(f.vars) != filepath.Dir(f.code) {
				t.Errorf("%s: %s with a template from elsewhere: %s", arch, f.code, f.vars)
			}
		}
	}
}
