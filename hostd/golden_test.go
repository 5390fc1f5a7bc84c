package hostd

import (
	"context"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/coworkhq/cowork/hostd/controlwire"
	"github.com/coworkhq/cowork/hostd/instance"
	"github.com/coworkhq/cowork/hostd/machine/machinetest"
	"github.com/coworkhq/cowork/image/golden"
	"github.com/coworkhq/cowork/image/qcow2"
)

// An instance's disk.qcow2 names its backing file, which QEMU opens and
// hands to the guest. One naming a host file (a key, by any path) must
// never boot: hostd refuses before any VM is made. One on a golden disk
// of the store boots.
func TestHostdBootsAnOverlayOnlyOnAGoldenDisk(t *testing.T) {
	secret := filepath.Join(t.TempDir(), "disk.raw") // named like a golden disk, outside the store
	if err := os.WriteFile(secret, []byte(strings.Repeat("PRIVATE KEY ", 1<<12)), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name    string
		backing func(store string) string
		boots   bool
	}{
		{"a host file", func(string) string { return secret }, false},
		{"out of the store by ..", func(store string) string {
			os.MkdirAll(filepath.Join(store, strings.Repeat("a", 64)), 0o700)
			return store + "/" + strings.Repeat("a", 64) + "/" + strings.Repeat("../", 40) + secret[1:]
		}, false},
		{"a symlink in the store to a host file", func(store string) string {
			dir := filepath.Join(store, strings.Repeat("b", 64))
			os.MkdirAll(dir, 0o700)
			os.Symlink(secret, filepath.Join(dir, "disk.raw"))
			return filepath.Join(dir, "disk.raw")
		}, false},
		{"a golden disk", func(store string) string {
			dir := filepath.Join(store, strings.Repeat("c", 64))
			os.MkdirAll(dir, 0o700)
			os.WriteFile(filepath.Join(dir, "disk.raw"), make([]byte, 1<<20), 0o444)
			return filepath.Join(dir, "disk.raw")
		}, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := newHostdTest(t, machinetest.Guest{})
			store, err := GoldenStore()
			if err != nil {
				t.Fatal(err)
			}
			h.cfg.DiskFormat = instance.DiskQcow2
			if err := h.cfg.Save(h.paths.Dir()); err != nil {
				t.Fatal(err)
			}
			if err := qcow2.CreateOverlay(h.cfg.DiskPath(h.paths), tc.backing(store.Dir), int64(h.cfg.Disk)); err != nil {
				t.Fatal(err)
			}
			if tc.boots {
				r := h.start(t)
				r.until(controlwire.PhaseReady)
				if got := h.host.Next(t).Config.Disk; got != h.cfg.DiskPath(h.paths) {
					t.Errorf("the VM's disk is %s", got)
				}
				return
			}
			// The refusal comes before the boot gets anywhere: run hostd
			// to its end, without following a control socket it may
			// close at once.
			ctx, cancel := context.WithTimeout(context.Background(), patience)
			defer cancel()
			err = Run(ctx, h.opts)
			if err == nil || !strings.Contains(err.Error(), "not a golden disk") {
				t.Errorf("Run: %v", err)
			}
			if n := h.host.Made(); n != 0 {
				t.Errorf("%d VMs made on an overlay of a host file", n)
			}
		})
	}
}

// --with docker adds Docker Engine to whatever the guest provisions, the
// default or the config's own, and so keys another golden disk.
func TestGuestForWithDocker(t *testing.T) {
	img := filepath.Join(t.TempDir(), "img.raw")
	os.WriteFile(img, []byte("a disk"), 0o600)
	digests := golden.Digests{Path: filepath.Join(t.TempDir(), "digests.json")}
	cfg := &instance.Config{Name: "box", Arch: "arm64", Boot: instance.BootEFI,
		Provision: &instance.Provision{Packages: []string{"tree"}}}
	plain, err := GoldenSpec(cfg, Sources{Image: img}, digests)
	if err != nil {
		t.Fatal(err)
	}
	cfg.With = []string{instance.WithDocker}
	g := GuestFor(cfg)
	if !slices.Equal(g.Packages, []string{"tree"}) || len(g.Provision) != 1 || !strings.Contains(g.Provision[0], "install --no-install-recommends docker.io apparmor") {
		t.Errorf("the guest with docker: packages %q, provision %q", g.Packages, g.Provision)
	}
	if !slices.Equal(cfg.Provision.Packages, []string{"tree"}) {
		t.Errorf("GuestFor changed the config: %q", cfg.Provision.Packages)
	}
	withDocker, err := GoldenSpec(cfg, Sources{Image: img}, digests)
	if err != nil {
		t.Fatal(err)
	}
	if withDocker.Provision == plain.Provision {
		t.Error("--with docker keys the same golden disk as the guest without it")
	}
}
