package golden

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/coworkhq/cowork/hostd/instance"
	"github.com/coworkhq/cowork/image/qcow2"
)

// The points at which a capture without reflinks can be cut short.
const (
	beforeMove    = iota // capture.json written, the disk not moved yet
	afterMove            // the disk in the .tmp- folder
	afterPublish         // the golden disk published, no overlay yet
	afterOverlay         // the overlay made, the config not saved
	afterSave            // the config saved, capture.json not removed
	completedStep        // not cut short
)

// cutShort does what Capture does on the overlay path up to step, then
// stops, as a crash would. It returns the .tmp- folder.
func cutShort(t *testing.T, s Store, p instance.Paths, cfg *instance.Config, key string, step int) string {
	t.Helper()
	if err := os.MkdirAll(s.Dir, 0o700); err != nil {
		t.Fatal(err)
	}
	tmp, err := os.MkdirTemp(s.Dir, tmpDir+key[:12]+"-")
	if err != nil {
		t.Fatal(err)
	}
	m := testMeta(key, cfg.Name)
	m.Size = diskSize
	b, _ := json.Marshal(intent{Key: key, Tmp: tmp, Meta: m})
	if err := instance.WriteFileAtomic(p.Capture(), b, 0o600); err != nil {
		t.Fatal(err)
	}
	if step == beforeMove {
		return tmp
	}
	if err := os.Rename(p.Disk(), filepath.Join(tmp, diskName)); err != nil {
		t.Fatal(err)
	}
	if step == afterMove {
		return tmp
	}
	g, err := s.publish(tmp, m)
	if err != nil {
		t.Fatal(err)
	}
	if step == afterPublish {
		return tmp
	}
	if err := qcow2.CreateOverlay(p.DiskFor(instance.DiskQcow2), g.Disk(), diskSize); err != nil {
		t.Fatal(err)
	}
	if step == afterOverlay {
		return tmp
	}
	c := *cfg
	c.DiskFormat, c.Golden = instance.DiskQcow2, key
	if err := c.Save(p.Dir()); err != nil {
		t.Fatal(err)
	}
	return tmp
}

// A capture cut short at any point leaves, after Recover, an instance
// that can start: its raw disk untouched if it had not moved, else an
// overlay on the published golden disk, recorded in its config.
func TestRecover(t *testing.T) {
	for _, step := range []int{beforeMove, afterMove, afterPublish, afterOverlay, afterSave} {
		t.Run([]string{"beforeMove", "afterMove", "afterPublish", "afterOverlay", "afterSave"}[step], func(t *testing.T) {
			s := newStore(t)
			p, cfg, content := newInstance(t, s, "inst")
			key := testKey(1)
			cutShort(t, s, p, cfg, key, step)

			// The instance's config as a new hostd would load it.
			loaded := loadConfig(t, p)
			changed, err := s.Recover(p, loaded)
			if err != nil {
				t.Fatalf("Recover: %v", err)
			}
			if l := leftovers(t, s); len(l) != 0 {
				t.Errorf("Recover left %v", l)
			}
			if exist(p.Capture()) {
				t.Errorf("Recover left capture.json")
			}
			if step == beforeMove {
				if changed || !bytes.Equal(readFile(t, p.Disk()), content) || exist(p.DiskFor(instance.DiskQcow2)) {
					t.Errorf("an undone capture changed the instance (changed %v)", changed)
				}
				if c := loadConfig(t, p); c.Format() != instance.DiskRaw || c.Golden != "" {
					t.Errorf("config: %q %q", c.Format(), c.Golden)
				}
				if all, _ := s.List(); len(all) != 0 {
					t.Errorf("an undone capture published %d golden disks", len(all))
				}
				return
			}
			g, err := s.Lookup(key)
			if err != nil || g == nil {
				t.Fatalf("Lookup: %v, %v", g, err)
			}
			assertOnGolden(t, s, p, g, content)
			if !changed || loaded.Format() != instance.DiskQcow2 || loaded.Golden != key {
				t.Errorf("Recover: changed %v, config in memory %q %q", changed, loaded.Format(), loaded.Golden)
			}
			// Recovered once, nothing more to do.
			if changed, err := s.Recover(p, loaded); changed || err != nil {
				t.Errorf("second Recover: %v, %v", changed, err)
			}
		})
	}
}

// A capture cut short after its disk moved, while another capture
// published the same key: the instance gets its disk back, writable.
func TestRecoverKeyTaken(t *testing.T) {
	s := newStore(t)
	p, cfg, content := newInstance(t, s, "inst")
	key := testKey(1)
	cutShort(t, s, p, cfg, key, afterMove)
	publishTest(t, s, key, []byte("another instance's disk"))

	if _, err := s.Recover(p, loadConfig(t, p)); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(readFile(t, p.Disk()), content) || exist(p.DiskFor(instance.DiskQcow2)) || exist(p.Capture()) {
		t.Fatalf("the instance did not get its own disk back")
	}
	if m := mode(t, p.Disk()); m.Perm()&0o200 == 0 {
		t.Errorf("the given-back disk is read-only (%v): QEMU cannot write it", m)
	}
	if c := loadConfig(t, p); c.Format() != instance.DiskRaw {
		t.Errorf("config format %q", c.Format())
	}
	if l := leftovers(t, s); len(l) != 0 {
		t.Errorf("left %v", l)
	}
}

// Without capture.json Recover does nothing.
func TestRecoverNothing(t *testing.T) {
	s := newStore(t)
	p, cfg, content := newInstance(t, s, "inst")
	changed, err := s.Recover(p, cfg)
	if changed || err != nil || !bytes.Equal(readFile(t, p.Disk()), content) || exist(s.Dir) {
		t.Errorf("Recover without capture.json: %v, %v", changed, err)
	}
}

// A capture.json that is not one Capture wrote moves and removes
// nothing: not a folder outside the store, not a golden disk.
func TestRecoverRefusesForeignRecords(t *testing.T) {
	s := newStore(t)
	p, cfg, content := newInstance(t, s, "inst")
	key := testKey(1)
	g := publishTest(t, s, testKey(2), []byte("a golden disk"))
	outside := filepath.Join(t.TempDir(), tmpDir+"victim")
	os.MkdirAll(outside, 0o700)
	os.WriteFile(filepath.Join(outside, diskName), []byte("precious"), 0o600)
	m := testMeta(key, "inst")

	for name, record := range map[string]any{
		"tmp outside the store":   intent{Key: key, Tmp: outside, Meta: m},
		"tmp escaping with ..":    intent{Key: key, Tmp: s.Dir + "/../../../" + filepath.Base(filepath.Dir(outside)) + "/" + tmpDir + "victim", Meta: m},
		"tmp a golden disk":       intent{Key: g.Key, Tmp: g.Dir, Meta: testMeta(g.Key, "inst")},
		"tmp the store itself":    intent{Key: key, Tmp: s.Dir, Meta: m},
		"bad key":                 intent{Key: "../../x", Tmp: filepath.Join(s.Dir, tmpDir+"x"), Meta: testMeta("../../x", "inst")},
		"key differs from meta's": intent{Key: key, Tmp: filepath.Join(s.Dir, tmpDir+"x"), Meta: testMeta(testKey(3), "inst")},
		"garbage":                 "not a record",
	} {
		t.Run(name, func(t *testing.T) {
			b, _ := json.Marshal(record)
			if name == "garbage" {
				b = []byte("{\x00garbage")
			}
			os.WriteFile(p.Capture(), b, 0o600)
			if changed, err := s.Recover(p, cfg); err == nil || changed {
				t.Errorf("Recover accepted it: changed %v", changed)
			}
			if !bytes.Equal(readFile(t, p.Disk()), content) || !exist(p.Capture()) {
				t.Errorf("the instance changed")
			}
			if !bytes.Equal(readFile(t, filepath.Join(outside, diskName)), []byte("precious")) {
				t.Errorf("the folder outside the store changed")
			}
			if got, err := s.Lookup(g.Key); err != nil || got == nil {
				t.Errorf("the golden disk is gone: %v", err)
			}
		})
	}
}

// A capture cut short keeps what it holds until Recover runs: a removal
// or a prune in between must not delete the instance's only disk.
func TestPruneKeepsInterruptedCaptures(t *testing.T) {
	for _, step := range []int{afterMove, afterPublish} {
		s := newStore(t)
		p, cfg, content := newInstance(t, s, "inst")
		key := testKey(1)
		cutShort(t, s, p, cfg, key, step)

		if g, _ := s.Lookup(key); g != nil {
			var inUse *InUseError
			if err := s.Remove(g); !asInUse(err, &inUse) || len(inUse.Users) != 1 || inUse.Users[0] != "inst" {
				t.Errorf("step %d: Remove of a golden disk being captured: %v", step, err)
			}
		}
		if _, err := s.Prune(); err != nil {
			t.Fatal(err)
		}
		if _, err := s.Recover(p, loadConfig(t, p)); err != nil {
			t.Fatalf("step %d: Recover after prune: %v", step, err)
		}
		g, err := s.Lookup(key)
		if err != nil || g == nil {
			t.Fatalf("step %d: the golden disk is gone: %v", step, err)
		}
		assertOnGolden(t, s, p, g, content)
	}
}

// A record whose disk is nowhere says so and what to do; a symlinked
// record is not read.
func TestRecoverLostDisk(t *testing.T) {
	s := newStore(t)
	p, cfg, _ := newInstance(t, s, "inst")
	tmp := cutShort(t, s, p, cfg, testKey(1), afterMove)
	os.RemoveAll(tmp)
	_, err := s.Recover(p, cfg)
	if err == nil || !strings.Contains(err.Error(), "cowork delete --name inst") {
		t.Errorf("Recover of a lost disk: %v", err)
	}

	q, qcfg, content := newInstance(t, s, "other")
	b := readFile(t, p.Capture())
	record := filepath.Join(t.TempDir(), "capture.json")
	os.WriteFile(record, b, 0o600)
	os.Symlink(record, q.Capture())
	if _, err := s.Recover(q, qcfg); err == nil || !bytes.Equal(readFile(t, q.Disk()), content) {
		t.Errorf("Recover read a symlinked capture.json: %v", err)
	}
}

// A capture.json that cannot be read may name any golden disk and any
// .tmp- folder: removals keep them all until it is dealt with.
func TestUnreadableRecordKeepsEverything(t *testing.T) {
	s := newStore(t)
	g := publishTest(t, s, testKey(1), []byte("golden"))
	p, _, _ := newInstance(t, s, "inst")
	os.WriteFile(p.Capture(), []byte("{garbage"), 0o600)
	os.Mkdir(filepath.Join(s.Dir, tmpDir+"someone"), 0o700)

	var inUse *InUseError
	if err := s.Remove(g); !asInUse(err, &inUse) || inUse.Users[0] != "inst" {
		t.Errorf("Remove: %v", err)
	}
	if removed, err := s.Prune(); err != nil || len(removed) != 0 || len(leftovers(t, s)) != 1 {
		t.Errorf("Prune removed %v, %v, left %v", removed, err, leftovers(t, s))
	}
	os.Remove(p.Capture())
	if removed, err := s.Prune(); err != nil || len(removed) != 1 || len(leftovers(t, s)) != 0 {
		t.Errorf("Prune once the record is gone: %v, %v, left %v", removed, err, leftovers(t, s))
	}
}
