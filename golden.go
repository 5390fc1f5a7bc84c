package cowork

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/coworkhq/cowork/hostd/agentclient"
	"github.com/coworkhq/cowork/hostd/instance"
	"github.com/coworkhq/cowork/internal/hostdwire"
)

// A golden disk is the disk of a provisioned guest kept in
// $COWORK_HOME/cache/golden, once per image and provisioning: the next
// instance of the same pair is cloned from it instead of provisioning
// (image/golden). The daemon binary does the work: these ask it.

// GoldenDisk is one golden disk, as ImageList lists it.
type GoldenDisk = hostdwire.GoldenDisk

// GoldenKey says which golden disk an instance with c, made from src,
// would be cloned from, and whether that one exists (then its size).
func GoldenKey(ctx context.Context, c *instance.Config, src instance.Sources) (hostdwire.GoldenKey, error) {
	var out hostdwire.GoldenKey
	b, err := json.Marshal(c)
	if err != nil {
		return out, err
	}
	args := []string{"golden", "key", "--config", string(b), "--image", src.Image}
	if src.Kernel != "" {
		args = append(args, "--kernel", src.Kernel)
	}
	if src.Initrd != "" {
		args = append(args, "--initrd", src.Initrd)
	}
	// Hashing an image the first time reads all of it.
	ctx, cancel := context.WithTimeout(ctx, 10*time.Minute)
	defer cancel()
	_, err = askBinaryNoTimeout(ctx, &out, args...)
	return out, err
}

// sealScript readies a provisioned guest's disk to be cloned: no clone
// may share its machine-id (systemd makes a new one at the next boot when
// /etc/machine-id is empty, unless D-Bus keeps a copy of the old one in a
// file of its own) or its random seed; the package cache and freed blocks
// are not worth keeping.
const sealScript = `set -u
if [ -s /etc/machine-id ]; then : >/etc/machine-id; fi
if [ -f /var/lib/dbus/machine-id ] && [ ! -L /var/lib/dbus/machine-id ]; then rm -f /var/lib/dbus/machine-id; fi
rm -f /var/lib/systemd/random-seed
if command -v apt-get >/dev/null; then apt-get clean || true; fi
fstrim -a >/dev/null 2>&1 || true
sync`

// CaptureResult is what CaptureGolden did.
type CaptureResult = hostdwire.GoldenResult

// CaptureGolden makes the provisioned, running instance's disk the golden
// disk of its image and provisioning: it seals the guest (see
// sealScript), stops it, and has the daemon binary move or clone the
// disk into the cache (the instance then runs on an overlay of it, or a
// clone). The instance is left stopped; start it again. A golden disk
// already there for the same pair is kept, the instance left as it was.
func (i *Instance) CaptureGolden(ctx context.Context, stopTimeout time.Duration) (CaptureResult, error) {
	var res CaptureResult
	if !i.Provisioned() {
		return res, fmt.Errorf("instance %s has not finished provisioning; nothing to keep", i.Name)
	}
	if i.Running() {
		st, err := i.Exec(ctx, agentclient.ExecOptions{Argv: []string{"/bin/sh", "-c", sealScript}, User: "root"})
		if err != nil {
			return res, fmt.Errorf("seal %s's guest before keeping its disk: %w", i.Name, err)
		}
		if st.Code != 0 {
			return res, fmt.Errorf("seal %s's guest before keeping its disk: exit %d", i.Name, st.Code)
		}
		if _, err := i.Stop(ctx, false, stopTimeout); err != nil {
			return res, err
		}
	}
	_, err := askBinaryNoTimeout(ctx, &res, "golden", "capture", "--name", i.Name)
	return res, err
}

// ImageList lists the golden disks, oldest first.
func ImageList(ctx context.Context) ([]GoldenDisk, error) {
	var out []GoldenDisk
	_, err := askBinary(ctx, &out, "golden", "ls")
	return out, err
}

// ImageRemove removes the golden disks whose keys start with the given
// prefixes; one that an instance's disk is an overlay on is refused,
// naming the instances. It returns the removed ones, and the errors.
func ImageRemove(ctx context.Context, prefixes ...string) ([]GoldenDisk, error) {
	return goldenLines(ctx, append([]string{"golden", "rm"}, prefixes...)...)
}

// ImagePrune removes every golden disk no instance depends on.
func ImagePrune(ctx context.Context) ([]GoldenDisk, error) {
	return goldenLines(ctx, "golden", "prune")
}

func goldenLines(ctx context.Context, args ...string) ([]GoldenDisk, error) {
	var out []GoldenDisk
	_, err := runBinary(ctx, func(line []byte) {
		var d GoldenDisk
		if json.Unmarshal(line, &d) == nil && d.Key != "" {
			out = append(out, d)
		}
	}, args...)
	var be *binaryError
	if errors.As(err, &be) {
		err = errors.New(be.msg)
	}
	return out, err
}

// cloneDisk has the daemon binary make a new instance's disk from the
// golden disk key.
func cloneDisk(ctx context.Context, key string, p instance.Paths, size int64) (string, error) {
	var res hostdwire.GoldenResult
	_, err := askBinaryNoTimeout(ctx, &res, "golden", "clone", "--key", key, "--dir", p.Dir(), "--size", strconv.FormatInt(size, 10))
	return res.Format, err
}
