package qemu

import (
	"os"
	"path/filepath"
	"syscall"
	"testing"
)

// The EFI variable store is the guest's own (it writes to it, and it
// lives next to the disk); the padded code image is a copy in the run
// directory. Both are their owner's alone, whatever the umask.
func TestFirmwareCopiesAreOwnerOnly(t *testing.T) {
	old := syscall.Umask(0)
	defer syscall.Umask(old)
	dir, cands := fakeFirmware(t, map[string][]byte{"qemu-efi-aarch64/QEMU_EFI.fd": []byte("efi")})
	f, err := findFirmware("arm64", cands)
	if err != nil {
		t.Fatal(err)
	}
	vars, run := filepath.Join(dir, "efi-vars"), t.TempDir()
	code, err := prepareFirmware("arm64", f, vars, run)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{vars, code} {
		st, err := os.Stat(p)
		if err != nil {
			t.Fatal(err)
		}
		if st.Mode().Perm() != 0o600 {
			t.Errorf("%s has mode %v, want 0600", filepath.Base(p), st.Mode().Perm())
		}
	}
}
