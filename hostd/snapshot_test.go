package hostd

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/coworkhq/cowork/hostd/controlwire"
	"github.com/coworkhq/cowork/hostd/instance"
	"github.com/coworkhq/cowork/hostd/machine/machinetest"
	"github.com/coworkhq/cowork/image/qcow2"
	"github.com/coworkhq/cowork/image/snapshot"
)

// A disk may sit on the instance's own snapshots; one whose chain leads to
// another instance's snapshot or out of the snapshots folder never boots:
// hostd refuses before any VM is made. A snapshot cut short is finished
// before the boot.
func TestHostdBootsOnlyOnItsOwnSnapshots(t *testing.T) {
	secretDir := t.TempDir()
	secret := filepath.Join(secretDir, "disk.raw")
	if err := os.WriteFile(secret, []byte(strings.Repeat("PRIVATE KEY ", 1<<12)), 0o600); err != nil {
		t.Fatal(err)
	}
	rawDisk := func(t *testing.T, h *hostdTest) {
		t.Helper()
		if err := os.WriteFile(h.paths.Disk(), nil, 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Truncate(h.paths.Disk(), int64(h.cfg.Disk)); err != nil {
			t.Fatal(err)
		}
	}
	// overlay gives the instance a disk.qcow2 on backing.
	overlay := func(t *testing.T, h *hostdTest, backing, format string) {
		t.Helper()
		h.cfg.DiskFormat = instance.DiskQcow2
		if err := h.cfg.Save(h.paths.Dir()); err != nil {
			t.Fatal(err)
		}
		if err := qcow2.CreateOverlayOn(h.cfg.DiskPath(h.paths), backing, format, int64(h.cfg.Disk)); err != nil {
			t.Fatal(err)
		}
	}
	for _, tc := range []struct {
		name  string
		setup func(t *testing.T, h *hostdTest)
		boots bool
	}{
		{"its own snapshots", func(t *testing.T, h *hostdTest) {
			rawDisk(t, h)
			for _, n := range []string{"s1", "s2"} {
				if _, err := snapshot.Create(h.paths, h.cfg, n); err != nil {
					t.Fatal(err)
				}
			}
		}, true},
		{"a snapshot cut short", func(t *testing.T, h *hostdTest) {
			rawDisk(t, h)
			// As a create killed after the rename leaves it.
			layer := filepath.Join(h.paths.Snapshots(), "s1", "disk.raw")
			os.MkdirAll(filepath.Dir(layer), 0o700)
			os.WriteFile(h.paths.SnapshotIntent(), []byte(`{"op":"create","meta":{"name":"s1","format":"raw","size":1073741824}}`), 0o600)
			if err := os.Rename(h.paths.Disk(), layer); err != nil {
				t.Fatal(err)
			}
		}, true},
		{"another instance's snapshot", func(t *testing.T, h *hostdTest) {
			other := filepath.Join(filepath.Dir(h.paths.Dir()), "other", "snapshots", "o1", "disk.raw")
			os.MkdirAll(filepath.Dir(other), 0o700)
			os.WriteFile(other, []byte("other"), 0o444)
			overlay(t, h, other, "raw")
		}, false},
		{"a symlinked snapshot folder", func(t *testing.T, h *hostdTest) {
			os.MkdirAll(h.paths.Snapshots(), 0o700)
			os.Symlink(secretDir, filepath.Join(h.paths.Snapshots(), "evil"))
			overlay(t, h, filepath.Join(h.paths.Snapshots(), "evil", "disk.raw"), "raw")
		}, false},
		{"a layer on a host file", func(t *testing.T, h *hostdTest) {
			layer := filepath.Join(h.paths.Snapshots(), "l", "disk.qcow2")
			os.MkdirAll(filepath.Dir(layer), 0o700)
			if err := qcow2.CreateOverlay(layer, secret, int64(h.cfg.Disk)); err != nil {
				t.Fatal(err)
			}
			overlay(t, h, layer, "qcow2")
		}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := newHostdTest(t, machinetest.Guest{})
			tc.setup(t, h)
			if tc.boots {
				r := h.start(t)
				r.until(controlwire.PhaseReady)
				if got := h.host.Next(t).Config.Disk; got != h.paths.DiskFor(instance.DiskQcow2) {
					t.Errorf("the VM's disk is %s", got)
				}
				if _, err := os.Lstat(h.paths.SnapshotIntent()); err == nil {
					t.Error("the snapshot's intent is left")
				}
				return
			}
			ctx, cancel := context.WithTimeout(context.Background(), patience)
			defer cancel()
			err := Run(ctx, h.opts)
			if err == nil || !strings.Contains(err.Error(), "refusing to start") {
				t.Errorf("Run: %v", err)
			}
			if n := h.host.Made(); n != 0 {
				t.Errorf("%d VMs made on a forbidden chain", n)
			}
		})
	}
}
