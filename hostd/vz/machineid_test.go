package vz

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// An empty or corrupt identifier file is replaced with a new identifier,
// with a warning, never handed to vz (which indexed the empty file's first
// byte and panicked hostd); a good one is kept as it is.
func TestMachineIDFile(t *testing.T) {
	h := newFakeHost()
	for _, c := range []struct {
		name    string
		content *string
		keep    bool
	}{
		{"missing", nil, false},
		{"empty", ptr(""), false},
		{"corrupt", ptr("garbage"), false},
		{"good", ptr("id-9"), true},
	} {
		t.Run(c.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "machine-id")
			if c.content != nil {
				os.WriteFile(path, []byte(*c.content), 0o600)
			}
			var log bytes.Buffer
			data, err := machineID(path, h.checkMachineID, h.newMachineID, logTo(&log))
			if err != nil {
				t.Fatal(err)
			}
			saved, _ := os.ReadFile(path)
			if !bytes.Equal(saved, data) || h.checkMachineID(data) != nil {
				t.Fatalf("got %q, file holds %q", data, saved)
			}
			if c.keep != (c.content != nil && string(data) == *c.content) {
				t.Errorf("kept %v: got %q", c.keep, data)
			}
			warned := strings.Contains(log.String(), "unusable")
			if warned != (c.content != nil && !c.keep) {
				t.Errorf("warned %v for a %s file: %s", warned, c.name, log.String())
			}
			if st, _ := os.Stat(path); st.Mode().Perm() != 0o600 {
				t.Errorf("mode %v", st.Mode())
			}
			left, _ := filepath.Glob(filepath.Join(filepath.Dir(path), ".machine-id.*"))
			if len(left) != 0 {
				t.Errorf("temporary files left: %v", left)
			}
		})
	}
}

// A VM whose identifier file is empty starts, with a new one, rather than
// handing vz nothing.
func TestStartWithAnEmptyMachineIDFile(t *testing.T) {
	c := vmConfig(t)
	os.WriteFile(c.MachineID, nil, 0o600)
	v, _, _ := startVM(t, c)
	if b, _ := os.ReadFile(c.MachineID); len(b) == 0 {
		t.Error("the identifier file is still empty")
	}
	v.Stop(context.Background(), 0)
}

// A folder where the file cannot be written: the error names the file and
// the folder.
func TestMachineIDUnwritable(t *testing.T) {
	if os.Geteuid() == 0 {
		t.Skip("root writes anywhere")
	}
	dir := t.TempDir()
	os.Chmod(dir, 0o500)
	defer os.Chmod(dir, 0o700)
	h := newFakeHost()
	_, err := machineID(filepath.Join(dir, "machine-id"), h.checkMachineID, h.newMachineID, quiet())
	if err == nil || !strings.Contains(err.Error(), "save the machine identifier") || !strings.Contains(err.Error(), dir) {
		t.Errorf("unwritable folder: %v", err)
	}
}

func ptr(s string) *string { return &s }
