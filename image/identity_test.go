package image

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// runIdentity runs identityScript as cloud-init's bootcmd would, with
// the instance id, in a root of its own (its paths moved under root) and
// a systemd-machine-id-setup that writes a fresh id.
func runIdentity(t *testing.T, root, instanceID string) {
	t.Helper()
	bin := filepath.Join(root, "bin")
	os.MkdirAll(bin, 0o755)
	setup := "#!/bin/sh\nhead -c 16 /dev/urandom | od -An -tx1 | tr -d ' \\n' >" + root + "/etc/machine-id\necho >>" + root + "/etc/machine-id\n"
	os.WriteFile(filepath.Join(bin, "systemd-machine-id-setup"), []byte(setup), 0o755)
	script := strings.NewReplacer("/var/lib/", root+"/var/lib/", "/etc/", root+"/etc/").Replace(identityScript)
	cmd := exec.Command("sh", "-eu", "-c", script)
	cmd.Env = []string{"PATH=" + bin + ":/usr/bin:/bin", "INSTANCE_ID=" + instanceID}
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("identity script: %v\n%s", err, out)
	}
}

// A disk that last booted as another instance (a golden disk's clone, a
// `cowork clone`) gets its own machine-id at its next boot, D-Bus's own
// copy goes, and a disk booting as the instance it was stays as it is.
func TestIdentityScriptRenewsTheMachineIDOfAClone(t *testing.T) {
	root := t.TempDir()
	for _, d := range []string{"etc", "var/lib/dbus"} {
		os.MkdirAll(filepath.Join(root, d), 0o755)
	}
	machineID := func() string { b, _ := os.ReadFile(filepath.Join(root, "etc/machine-id")); return string(b) }
	os.WriteFile(filepath.Join(root, "etc/machine-id"), []byte("1111\n"), 0o444)
	os.WriteFile(filepath.Join(root, "var/lib/dbus/machine-id"), []byte("1111\n"), 0o644)

	runIdentity(t, root, "cowork-a-1") // the first boot: recorded, nothing renewed
	if machineID() != "1111\n" {
		t.Fatalf("the first boot renewed the machine-id: %q", machineID())
	}
	runIdentity(t, root, "cowork-a-1") // the same instance again
	if machineID() != "1111\n" {
		t.Fatalf("a reboot renewed the machine-id: %q", machineID())
	}
	runIdentity(t, root, "cowork-b-2") // the disk now boots as a clone
	if id := machineID(); id == "1111\n" || len(strings.TrimSpace(id)) != 32 {
		t.Errorf("the clone kept its source's machine-id: %q", id)
	}
	if _, err := os.Stat(filepath.Join(root, "var/lib/dbus/machine-id")); err == nil {
		t.Error("D-Bus's copy of the old machine-id is still there")
	}
	if b, _ := os.ReadFile(filepath.Join(root, "var/lib/cowork/instance-id")); string(b) != "cowork-b-2\n" {
		t.Errorf("recorded instance %q", b)
	}
	// A D-Bus id that is a link to /etc/machine-id (Ubuntu's) stays.
	os.Symlink("/etc/machine-id", filepath.Join(root, "var/lib/dbus/machine-id"))
	runIdentity(t, root, "cowork-c-3")
	if _, err := os.Lstat(filepath.Join(root, "var/lib/dbus/machine-id")); err != nil {
		t.Error("the D-Bus link to /etc/machine-id was removed")
	}
}
