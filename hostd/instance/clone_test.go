package instance

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/coworkhq/cowork/hostd/netstack/audit"
	"github.com/coworkhq/cowork/units"
)

// source makes a provisioned, stopped instance "src" in a fresh
// COWORK_HOME: its disk holds data at known offsets.
func source(t *testing.T, boot string) *Config {
	t.Helper()
	t.Setenv("COWORK_HOME", t.TempDir())
	c := &Config{Name: "src", CPUs: 2, Memory: units.GiB, Disk: units.GiB, Workspace: t.TempDir(), Arch: "arm64", Boot: boot,
		InstanceID: "cowork-src-1", Publish: []Publish{{HostIP: "127.0.0.1", HostPort: 8080, GuestPort: 80}}}
	c.Network.Allow = []string{"pypi.org"}
	p, _ := PathsFor(c.Name)
	os.MkdirAll(p.Dir(), 0o700)
	f, _ := os.Create(p.Disk())
	f.Truncate(64 << 20) // the file, sparse; the config says what the guest sees
	f.WriteAt([]byte("bootloader"), 0)
	f.WriteAt([]byte("the guest's files"), 32<<20)
	f.Close()
	if boot == BootKernel {
		os.WriteFile(p.Kernel(), []byte("kernel"), 0o600)
	} else {
		os.WriteFile(p.EFIVars(), []byte("vars"), 0o600)
	}
	os.WriteFile(p.MachineID(), []byte("vz identity"), 0o600)
	os.WriteFile(p.Provisioned(), []byte("yes\n"), 0o600)
	if err := c.Save(p.Dir()); err != nil {
		t.Fatal(err)
	}
	return c
}

func TestCloneCopiesTheDiskAndGivesANewIdentity(t *testing.T) {
	for _, boot := range []string{BootKernel, BootEFI} {
		t.Run(boot, func(t *testing.T) {
			src := source(t, boot)
			ws := t.TempDir()
			c, err := Clone(src, "dst", CloneOptions{Workspace: ws})
			if err != nil {
				t.Fatal(err)
			}
			sp, _ := PathsFor("src")
			dp, _ := PathsFor("dst")
			a, _ := os.ReadFile(sp.Disk())
			b, _ := os.ReadFile(dp.Disk())
			if !bytes.Equal(a, b) {
				t.Error("the clone's disk differs from its source's")
			}
			loaded, err := Load("dst")
			if err != nil {
				t.Fatal(err)
			}
			if loaded.Name != "dst" || loaded.InstanceID == src.InstanceID || !strings.HasPrefix(loaded.InstanceID, "cowork-dst-") {
				t.Errorf("identity: name %q, instance-id %q", loaded.Name, loaded.InstanceID)
			}
			if loaded.Workspace != ws || len(loaded.Publish) != 0 || len(loaded.Network.Allow) != 1 || loaded.CPUs != 2 || c.Boot != boot {
				t.Errorf("settings: %+v", loaded)
			}
			if _, err := os.Stat(dp.MachineID()); err == nil {
				t.Error("the platform's machine identifier was copied: two VMs would share it")
			}
			if _, err := os.Stat(dp.Provisioned()); err != nil {
				t.Error("the clone is not marked provisioned")
			}
			// Writing the clone leaves the source alone.
			f, _ := os.OpenFile(dp.Disk(), os.O_WRONLY, 0)
			f.WriteAt([]byte("changed"), 0)
			f.Close()
			if a2, _ := os.ReadFile(sp.Disk()); !bytes.Equal(a, a2) {
				t.Error("writing the clone changed its source")
			}
			if st, _ := os.Stat(dp.Disk()); st.Mode().Perm() != 0o600 {
				t.Errorf("disk mode %v", st.Mode())
			}
		})
	}
}

// A clone's audit log is its own: it gets neither the source's log nor
// its key, and the chain its hostd starts is under a key of its own
// (one clone holding another's key could forge that one's log).
func TestCloneMakesItsOwnAuditKey(t *testing.T) {
	src := source(t, BootKernel)
	sp, _ := PathsFor("src")
	writeAudit(t, sp)
	if _, err := Clone(src, "dst", CloneOptions{}); err != nil {
		t.Fatal(err)
	}
	dp, _ := PathsFor("dst")
	for _, f := range []string{dp.AuditKey(), dp.AuditHead(), dp.NetworkLog()} {
		if _, err := os.Stat(f); err == nil {
			t.Errorf("%s was copied", filepath.Base(f))
		}
	}
	writeAudit(t, dp)
	a, _ := os.ReadFile(sp.AuditKey())
	b, _ := os.ReadFile(dp.AuditKey())
	if len(a) == 0 || bytes.Equal(a, b) {
		t.Fatalf("keys %q and %q", a, b)
	}
	// The clone's key does not verify the source's log.
	v, err := audit.Verify(context.Background(), sp.NetworkLog(), dp.Audit())
	if err != nil || v.OK {
		t.Fatalf("the source's log under the clone's key: %+v %v", v, err)
	}
}

// writeAudit writes a record to the network log of the instance at p, as
// its hostd does.
func writeAudit(t *testing.T, p Paths) {
	t.Helper()
	l, err := audit.Open(p.NetworkLog(), p.Audit())
	if err != nil {
		t.Fatal(err)
	}
	l.Write(&audit.Record{Kind: audit.KindDNS, Verdict: audit.Allow, Name: "pypi.org"})
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
}

func TestCloneRefuses(t *testing.T) {
	src := source(t, BootKernel)
	sp, _ := PathsFor("src")
	if _, err := Clone(src, "../x", CloneOptions{}); err == nil {
		t.Error("a bad name")
	}
	if _, err := Clone(src, "src", CloneOptions{}); !errors.As(err, new(*ExistsError)) {
		t.Errorf("an existing instance: %v", err)
	}
	l, err := TryLock(sp)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := Clone(src, "dst", CloneOptions{}); err == nil || !strings.Contains(err.Error(), "stop it first") {
		t.Errorf("a running source: %v", err)
	}
	l.Release()
	os.WriteFile(sp.Capture(), []byte("{}"), 0o600)
	if _, err := Clone(src, "dst", CloneOptions{}); err == nil || !strings.Contains(err.Error(), "capture") {
		t.Errorf("a capture to finish: %v", err)
	}
	os.Remove(sp.Capture())
	os.Remove(sp.Provisioned())
	if _, err := Clone(src, "dst", CloneOptions{}); err == nil || !strings.Contains(err.Error(), "init") {
		t.Errorf("an unprovisioned source: %v", err)
	}
	home, _ := Home()
	if _, err := Clone(src, "dst", CloneOptions{Workspace: filepath.Dir(home)}); err == nil || !strings.Contains(err.Error(), "holds cowork's own folder") {
		t.Errorf("a workspace that holds cowork's folder: %v", err)
	}
	dp, _ := PathsFor("dst")
	if _, err := os.Stat(dp.Dir()); err == nil {
		t.Error("a refused clone left a folder")
	}
	// A folder that is not an interrupted init's is never overwritten.
	os.WriteFile(sp.Provisioned(), nil, 0o600)
	os.MkdirAll(dp.Dir(), 0o700)
	os.WriteFile(filepath.Join(dp.Dir(), "notes.txt"), []byte("mine"), 0o600)
	if _, err := Clone(src, "dst", CloneOptions{}); err == nil {
		t.Error("cloned over a foreign folder")
	}
	if b, _ := os.ReadFile(filepath.Join(dp.Dir(), "notes.txt")); string(b) != "mine" {
		t.Error("the foreign folder was touched")
	}
}

// An instance with snapshots (or one being taken) is refused, for now: its
// disk sits on layers in its own folder that no other instance may name.
// A removal's leftover is no snapshot.
func TestCloneRefusesAnInstanceWithSnapshots(t *testing.T) {
	src := source(t, BootKernel)
	sp, _ := PathsFor("src")
	os.MkdirAll(filepath.Join(sp.Snapshots(), ".rm-old"), 0o700)
	if _, err := Clone(src, "dst0", CloneOptions{}); err != nil {
		t.Fatalf("a removal's leftover: %v", err)
	}
	for _, mk := range []func(){
		func() { os.WriteFile(sp.SnapshotIntent(), []byte("{}"), 0o600) },
		func() { os.Remove(sp.SnapshotIntent()); os.MkdirAll(filepath.Join(sp.Snapshots(), "s1"), 0o700) },
	} {
		mk()
		_, err := Clone(src, "dst", CloneOptions{})
		if err == nil || !strings.Contains(err.Error(), "src has snapshots") || !strings.Contains(err.Error(), "clone from a snapshot comes next") {
			t.Errorf("Clone = %v", err)
		}
		dp, _ := PathsFor("dst")
		if _, err := os.Lstat(dp.Dir()); err == nil {
			t.Error("a refused clone left dst's folder")
		}
	}
}
