package hostd

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/coworkhq/cowork/hostd/instance"
	"github.com/coworkhq/cowork/image"
	"github.com/coworkhq/cowork/image/golden"
	"github.com/coworkhq/cowork/image/snapshot"
)

// Sources names the files an instance is (or was) made from, for its
// golden-disk spec: the image, and the kernel and initrd it boots.
type Sources struct{ Image, Kernel, Initrd string }

// GoldenSpec is the spec of the golden disk an instance with cfg, made
// from src, would be cloned from. Digests of the files are cached in
// digests.
func GoldenSpec(cfg *instance.Config, src Sources, digests golden.Digests) (golden.Spec, error) {
	g := GuestFor(cfg)
	script := sha256.Sum256([]byte(image.ProvisionScriptOf(g)))
	s := golden.Spec{
		Arch:      cfg.Arch,
		User:      g.User,
		UID:       g.UID,
		Provision: hex.EncodeToString(script[:]),
	}
	var err error
	if s.ImageSHA256, err = digests.Of(src.Image); err != nil {
		return s, fmt.Errorf("image %s: %w", src.Image, err)
	}
	if cfg.Boot == instance.BootKernel {
		s.Cmdline = cfg.Cmdline
		if s.KernelSHA256, err = digests.Of(src.Kernel); err != nil {
			return s, fmt.Errorf("kernel: %w", err)
		}
		if src.Initrd != "" {
			if s.InitrdSHA256, err = digests.Of(src.Initrd); err != nil {
				return s, fmt.Errorf("initrd: %w", err)
			}
		}
	}
	return s, nil
}

// InstanceSources are the sources of an existing instance: its image as
// recorded, its own copies of kernel and initrd.
func InstanceSources(cfg *instance.Config, p instance.Paths) Sources {
	src := Sources{Image: cfg.Image}
	if cfg.Boot == instance.BootKernel {
		src.Kernel = p.Kernel()
		if _, err := os.Stat(p.Initrd()); err == nil {
			src.Initrd = p.Initrd()
		}
	}
	return src
}

// ProvisionSummary is one line saying what a guest was provisioned with.
func ProvisionSummary(cfg *instance.Config) string {
	if cfg.Provision == nil {
		return "default toolchain, Node.js, Claude Code"
	}
	var parts []string
	if n := len(cfg.Provision.Packages); n > 0 {
		parts = append(parts, fmt.Sprintf("%d packages (%s)", n, clip(strings.Join(cfg.Provision.Packages, " "), 40)))
	}
	if n := len(cfg.Provision.Commands); n > 0 {
		parts = append(parts, fmt.Sprintf("%d commands", n))
	}
	if len(parts) == 0 {
		return "nothing"
	}
	return strings.Join(parts, ", ")
}

// GoldenStore is the golden disks of $COWORK_HOME.
func GoldenStore() (golden.Store, error) {
	home, err := instance.Home()
	if err != nil {
		return golden.Store{}, err
	}
	home, err = filepath.Abs(home)
	if err != nil {
		return golden.Store{}, err
	}
	return golden.Store{Dir: filepath.Join(home, instance.CacheDir, "golden"), Home: home}, nil
}

// GoldenDigests is the digest cache of $COWORK_HOME.
func GoldenDigests() golden.Digests {
	home, err := instance.Home()
	if err != nil {
		return golden.Digests{}
	}
	return golden.Digests{Path: filepath.Join(home, instance.CacheDir, "digests.json")}
}

// prepareDisk readies the instance's disk before a boot: a snapshot or a
// capture cut short is finished or undone, and an overlay's chain of
// backing files checked.
func (d *Daemon) prepareDisk() error {
	if d.cfg.Remote() {
		return nil // its disk is its backend's, on the cluster
	}
	store, err := GoldenStore()
	if err != nil {
		return err
	}
	if _, err := snapshot.Recover(d.paths, d.cfg); err != nil {
		return err
	}
	if _, err := store.Recover(d.paths, d.cfg); err != nil {
		return err
	}
	if d.cfg.Format() == instance.DiskQcow2 {
		return store.CheckOverlay(d.cfg.DiskPath(d.paths))
	}
	return nil
}
