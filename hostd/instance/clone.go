package instance

import (
	"errors"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/coworkhq/cowork/hostd/secretstore"
	"github.com/coworkhq/cowork/internal/reflink"
)

// Clone makes the instance dst from the stopped instance src: its disk (a
// reflink where the file system can make one, else a sparse copy; a
// qcow2 overlay stays an overlay on the same golden disk), kernel files,
// EFI variables, settings and network policy. dst gets its own name, and
// with it its own MAC; its own cloud-init instance-id, so the guest
// makes itself new ssh host keys and a new machine-id at its first boot;
// and no machine identifier of the platform (vz makes one). workspace,
// when not empty, replaces src's. It holds src's lock throughout, so src
// cannot start while its disk is read; dst's config is written last, and
// a failed clone removes what it made.
//
// o.FromSnapshot, when not nil, makes dst's disk instead of a copy of
// src's (image/snapshot.CloneDisk: a snapshot's layers); src may then be
// running, or start meanwhile: no one rewrites a snapshot's files.
func Clone(src *Config, dst string, o CloneOptions) (c *Config, err error) {
	workspace, fromSnapshot := o.Workspace, o.FromSnapshot
	if err := ValidateName(dst); err != nil {
		return nil, err
	}
	if workspace != "" {
		home, err := Home()
		if err != nil {
			return nil, err
		}
		if err := (&Config{Workspace: workspace}).CheckWorkspace(home); err != nil {
			return nil, err
		}
	}
	sp, err := PathsFor(src.Name)
	if err != nil {
		return nil, err
	}
	dp, err := PathsFor(dst)
	if err != nil {
		return nil, err
	}
	if _, err := os.Stat(dp.Config()); err == nil {
		return nil, &ExistsError{Name: dst}
	}
	if _, err := os.Lstat(dp.Dir()); err == nil {
		if err := CheckLeftover(dp); err != nil {
			return nil, err
		}
	}
	running := false
	if fromSnapshot != nil {
		// A snapshot's files are never rewritten, only removed (hard links
		// keep what was linked): its clone needs no lock of src's, and
		// takes none, so that src can start meanwhile.
		running = Held(sp)
	} else {
		lock, err := TryLock(sp)
		switch {
		case errors.Is(err, ErrRunning):
			return nil, fmt.Errorf("%s is running; stop it first with `cowork stop%s` (a running disk cannot be copied whole), or clone one of its snapshots (--snapshot)", src.Name, NameFlag(src.Name))
		case err != nil:
			return nil, err
		}
		defer lock.Release()
	}
	if _, err := os.Stat(sp.Provisioned()); err != nil {
		return nil, fmt.Errorf("%s has not finished its init; finish it with `cowork init%s` first", src.Name, NameFlag(src.Name))
	}
	if _, err := os.Lstat(sp.Capture()); err == nil {
		return nil, fmt.Errorf("%s has a golden disk capture to finish; start it once with `cowork start%s` first", src.Name, NameFlag(src.Name))
	}
	if hasSnapshots(sp) && fromSnapshot == nil {
		// Its disk is an overlay on layers in its own folder, which
		// another instance's disk may not name (image/golden's
		// CheckOverlay); copying the chain flat would take minutes.
		return nil, fmt.Errorf("%s has snapshots: its disk sits on them, and a clone cannot yet; clone from a snapshot comes next (`cowork snapshot ls%s` lists them)", src.Name, NameFlag(src.Name))
	}
	if err := removeLeftover(dp); err != nil {
		return nil, err
	}
	if err := os.MkdirAll(dp.Dir(), 0o700); err != nil {
		return nil, err
	}
	defer func() {
		if err != nil {
			ForgetSecrets(src.Secrets, dp)
			os.RemoveAll(dp.Dir())
		}
	}()
	if o.OnDir != nil {
		if err := o.OnDir(dp.Dir()); err != nil {
			return nil, err
		}
	}
	var files []string
	if fromSnapshot == nil {
		files = append(files, src.DiskPath(sp))
	}
	if src.Boot == BootKernel {
		files = append(files, sp.Kernel())
		if _, err := os.Stat(sp.Initrd()); err == nil {
			files = append(files, sp.Initrd())
		}
	} else if _, err := os.Stat(sp.EFIVars()); err == nil && !running {
		// A running guest's firmware may be writing them: the clone's
		// are made afresh from the firmware's template at its first boot.
		files = append(files, sp.EFIVars())
	}
	for _, f := range files {
		to := dp.Dir() + f[len(sp.Dir()):]
		if _, err := reflink.Copy(f, to); err != nil {
			return nil, fmt.Errorf("copy %s: %w", f, err)
		}
	}
	if err := copyFile(sp.Provisioned(), dp.Provisioned()); err != nil {
		return nil, err
	}
	if err := copySecretValues(src, sp, dp); err != nil {
		return nil, err
	}
	c = &Config{}
	*c = *src
	if fromSnapshot != nil {
		if c.DiskFormat, err = fromSnapshot(sp, dp); err != nil {
			return nil, err
		}
	}
	c.Name, c.Created = dst, time.Now().UTC()
	c.InstanceID = fmt.Sprintf("cowork-%s-%d", dst, c.Created.Unix())
	if workspace != "" {
		c.Workspace = workspace
	}
	c.Publish = nil // a host port is one instance's: two would collide
	c.MAC = ""      // its own, from its name (a fork is given its source's by its caller)
	c.Throwaway = o.Throwaway
	if err := os.MkdirAll(c.Workspace, 0o755); err != nil {
		return nil, fmt.Errorf("create workspace: %w", err)
	}
	return c, c.Save(dp.Dir())
}

// CloneOptions say how Clone makes its instance.
type CloneOptions struct {
	// Workspace, when not empty, replaces the source's shared folder.
	Workspace    string
	FromSnapshot DiskCloner
	// Throwaway marks the clone as one run's (Config.Throwaway) from the
	// moment its config exists.
	Throwaway *Throwaway
	// OnDir, when set, is called with the clone's folder as soon as it
	// is made, before anything is in it (a throwaway's claim is taken
	// there, so that no one takes the clone for a leftover).
	OnDir func(dir string) error
}

// DiskCloner makes a clone's disk in dp from the instance in sp (holding
// its lock, or running) and returns the disk's format.
type DiskCloner func(sp, dp Paths) (format string, err error)

// hasSnapshots says whether the instance in p has snapshots, or one being
// taken.
func hasSnapshots(p Paths) bool {
	if _, err := os.Lstat(p.SnapshotIntent()); err == nil {
		return true
	}
	entries, _ := os.ReadDir(p.Snapshots())
	for _, e := range entries {
		if !strings.HasPrefix(e.Name(), ".") { // .rm-*: a removal's leftover
			return true
		}
	}
	return false
}

// copySecretValues gives a clone the values of its source's secrets,
// kept where the source keeps them, as entries of its own (its deletion
// removes them; the source's stay).
func copySecretValues(src *Config, sp, dp Paths) error {
	from, to := secretstore.Open(sp.Dir()), secretstore.Open(dp.Dir())
	for _, s := range src.Secrets {
		v, err := from.Get(s.Store, s.Name)
		if err == nil {
			err = to.Set(s.Store, s.Name, v)
		}
		if err != nil {
			return fmt.Errorf("copy the secret %s of %s: %w", s.Name, src.Name, err)
		}
	}
	return nil
}

// ForgetSecrets removes the values of an instance's secrets that are kept
// outside its folder (a keychain's entries), as its folder goes. It is
// best effort: what is left is an entry named after a folder that is gone.
func ForgetSecrets(secrets []Secret, p Paths) {
	st := secretstore.Open(p.Dir())
	for _, s := range secrets {
		if s.Store != secretstore.File {
			_ = st.Delete(s.Store, s.Name)
		}
	}
}
