package golden

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/coworkhq/cowork/hostd/instance"
)

// QEMU opens whatever backing file a qcow2 header names: CheckOverlay
// lets through only a raw golden disk of this store, so a disk.qcow2 put
// together by someone else cannot hand the guest a host file.
func TestCheckOverlayRefusesForeignBackings(t *testing.T) {
	s := newStore(t)
	g := publishTest(t, s, testKey(1), []byte("golden"))
	secretDir := filepath.Join(t.TempDir(), testKey(9)) // looks like a store's folder
	os.MkdirAll(secretDir, 0o700)
	secret := filepath.Join(secretDir, diskName)
	os.WriteFile(secret, []byte("id_ed25519"), 0o600)

	// A symlinked disk and a symlinked folder inside the store.
	linkKey, dirKey := testKey(2), testKey(3)
	os.Mkdir(filepath.Join(s.Dir, linkKey), 0o700)
	os.Symlink(secret, filepath.Join(s.Dir, linkKey, diskName))
	os.Symlink(secretDir, filepath.Join(s.Dir, dirKey))
	// Not golden disks, though in the store.
	os.Mkdir(filepath.Join(s.Dir, "notakey"), 0o700)
	os.WriteFile(filepath.Join(s.Dir, "notakey", diskName), nil, 0o444)
	os.Mkdir(filepath.Join(s.Dir, tmpDir+"capture"), 0o700)
	os.WriteFile(filepath.Join(s.Dir, tmpDir+"capture", diskName), nil, 0o444)
	fifoKey := testKey(4)
	os.Mkdir(filepath.Join(s.Dir, fifoKey), 0o700)
	if err := syscall.Mkfifo(filepath.Join(s.Dir, fifoKey, diskName), 0o600); err != nil {
		t.Fatal(err)
	}

	inst := t.TempDir()
	overlay := filepath.Join(inst, "disk.qcow2")
	for name, c := range map[string]struct{ backing, format string }{
		"outside the store":          {secret, "raw"},
		"symlinked disk in store":    {filepath.Join(s.Dir, linkKey, diskName), "raw"},
		"symlinked folder in store":  {filepath.Join(s.Dir, dirKey, diskName), "raw"},
		"dot-dot out of the store":   {g.Dir + "/../../../../" + filepath.Base(filepath.Dir(secretDir)) + "/" + testKey(9) + "/" + diskName, "raw"},
		"format qcow2":               {g.Disk(), "qcow2"},
		"no backing format (probed)": {g.Disk(), ""},
		"key not 64 hex":             {filepath.Join(s.Dir, "notakey", diskName), "raw"},
		"a capture's .tmp- folder":   {filepath.Join(s.Dir, tmpDir+"capture", diskName), "raw"},
		"meta.json, not the disk":    {filepath.Join(g.Dir, metaName), "raw"},
		"a fifo":                     {filepath.Join(s.Dir, fifoKey, diskName), "raw"},
		"protocol prefix":            {"json:{\"file.filename\":\"" + secret + "\"}", "raw"},
		"gone":                       {filepath.Join(s.Dir, testKey(5), diskName), "raw"},
	} {
		craftOverlay(t, overlay, c.backing, c.format)
		if err := s.CheckOverlay(overlay); err == nil {
			t.Errorf("%s: CheckOverlay accepts backing %q format %q", name, c.backing, c.format)
		}
	}

	craftOverlay(t, overlay, g.Disk(), "raw")
	if err := s.CheckOverlay(overlay); err != nil {
		t.Errorf("CheckOverlay refuses an overlay on a golden disk: %v", err)
	}
	os.WriteFile(overlay, []byte("not a qcow2 at all, but long enough to be read as one maybe........."), 0o600)
	if err := s.CheckOverlay(overlay); err == nil {
		t.Errorf("CheckOverlay accepts garbage")
	}
}

// A relative backing name is resolved by QEMU from the overlay's folder,
// by the check from the process's working directory: it is refused,
// whatever the working directory.
func TestCheckOverlayRefusesRelativeBacking(t *testing.T) {
	s := newStore(t)
	g := publishTest(t, s, testKey(1), []byte("golden"))
	inst := t.TempDir()
	// What QEMU would open: the instance's folder's KEY/disk.raw.
	os.Mkdir(filepath.Join(inst, g.Key), 0o700)
	os.WriteFile(filepath.Join(inst, g.Key, diskName), []byte("id_ed25519"), 0o600)
	os.Symlink(filepath.Join(inst, g.Key), filepath.Join(inst, "link"))
	overlay := filepath.Join(inst, "disk.qcow2")
	// From the working directory, both names lead to the golden disk.
	cwd := t.TempDir()
	os.Symlink(g.Dir, filepath.Join(cwd, "link"))
	t.Chdir(cwd)
	os.Symlink(s.Dir, filepath.Join(cwd, g.Key[:1]))
	for _, backing := range []string{"link/" + diskName, filepath.Join(g.Key[:1], g.Key, diskName)} {
		craftOverlay(t, overlay, backing, "raw")
		if err := s.CheckOverlay(overlay); err == nil {
			t.Errorf("CheckOverlay accepts the relative backing name %q", backing)
		}
	}
}

// Lookup and List read only the store's own files: no symlink out of it,
// no meta.json of another key, no huge or endless meta.json.
func TestLookupHostileFolders(t *testing.T) {
	s := newStore(t)
	outside := t.TempDir()
	good := publishTest(t, s, testKey(0), []byte("good"))

	// A folder as published, with outside copies to point at.
	folder := func(key string) string {
		dir := filepath.Join(s.Dir, key)
		os.MkdirAll(dir, 0o700)
		m := testMeta(key, "x")
		b, _ := json.Marshal(m)
		os.WriteFile(filepath.Join(dir, metaName), b, 0o444)
		os.WriteFile(filepath.Join(dir, diskName), []byte("disk"), 0o444)
		od := filepath.Join(outside, key)
		os.MkdirAll(od, 0o700)
		os.WriteFile(filepath.Join(od, metaName), b, 0o444)
		os.WriteFile(filepath.Join(od, diskName), []byte("outside"), 0o444)
		return dir
	}
	cases := map[string]string{}
	k := testKey(1)
	d := folder(k)
	os.Remove(filepath.Join(d, metaName))
	os.Symlink(filepath.Join(outside, k, metaName), filepath.Join(d, metaName))
	cases[k] = "symlinked meta.json"

	k = testKey(2)
	d = folder(k)
	os.Remove(filepath.Join(d, diskName))
	os.Symlink(filepath.Join(outside, k, diskName), filepath.Join(d, diskName))
	cases[k] = "symlinked disk.raw"

	k = testKey(3)
	d = folder(k)
	b, _ := json.Marshal(testMeta(testKey(4), "x"))
	os.WriteFile(filepath.Join(d, metaName), b, 0o444)
	cases[k] = "meta.json of another key"

	k = testKey(5)
	d = folder(k)
	b, _ = json.Marshal(testMeta(k, "x"))
	b = append(b, bytes.Repeat([]byte(" "), 64<<10)...) // valid JSON, too big
	os.Remove(filepath.Join(d, metaName))
	os.WriteFile(filepath.Join(d, metaName), b, 0o444)
	cases[k] = "huge meta.json"

	k = testKey(6)
	folder(k)
	os.RemoveAll(filepath.Join(s.Dir, k))
	os.Symlink(filepath.Join(outside, k), filepath.Join(s.Dir, k))
	cases[k] = "symlinked folder"

	k = testKey(7)
	d = folder(k)
	os.Remove(filepath.Join(d, metaName))
	syscall.Mkfifo(filepath.Join(d, metaName), 0o600)
	cases[k] = "fifo meta.json"

	done := make(chan struct{})
	go func() {
		defer close(done)
		for k, name := range cases {
			if g, err := s.Lookup(k); g != nil {
				t.Errorf("%s: Lookup = %+v, %v", name, g, err)
			}
		}
		all, err := s.List()
		if err != nil || len(all) != 1 || all[0].Key != good.Key {
			var keys []string
			for _, g := range all {
				keys = append(keys, cases[g.Key])
			}
			t.Errorf("List = %v, %v; want only the good disk", keys, err)
		}
	}()
	select {
	case <-done:
	case <-time.After(2 * time.Minute): // a deadline, not a speed: a blocked open never returns
		t.Fatal("Lookup blocks on a fifo meta.json")
	}
}

// Removing a golden disk whose folder became a symlink removes the link,
// never what it points to.
func TestRemoveSymlinkedFolder(t *testing.T) {
	s := newStore(t)
	g := publishTest(t, s, testKey(1), []byte("golden"))
	outside := filepath.Join(t.TempDir(), "precious")
	if err := os.Rename(g.Dir, outside); err != nil {
		t.Fatal(err)
	}
	os.Chmod(filepath.Join(outside, diskName), 0o644)
	os.Symlink(outside, g.Dir)

	if err := s.Remove(g); err != nil && !strings.Contains(err.Error(), g.Key[:12]) {
		t.Logf("Remove: %v", err)
	}
	if !bytes.Equal(readFile(t, filepath.Join(outside, diskName)), []byte("golden")) || !exist(filepath.Join(outside, metaName)) {
		t.Fatalf("Remove deleted files outside the store")
	}
	if _, err := s.Prune(); err != nil {
		t.Fatal(err)
	}
	if !exist(filepath.Join(outside, diskName)) {
		t.Fatalf("Prune deleted files outside the store")
	}
}

// Capture refuses an instance disk that is a symlink: it would move or
// publish a file from elsewhere.
func TestCaptureRefusesSymlinkedDisk(t *testing.T) {
	for name, reflinks := range map[string]func(*testing.T){"overlay": noReflinks, "reflink": copyReflinks} {
		reflinks(t)
		s := newStore(t)
		p, cfg, _ := newInstance(t, s, "inst")
		secret := filepath.Join(t.TempDir(), "secret")
		os.WriteFile(secret, []byte("id_ed25519"), 0o600)
		os.Remove(p.Disk())
		os.Symlink(secret, p.Disk())
		if _, err := s.Capture(p, cfg, testMeta(testKey(1), "inst")); err == nil {
			t.Errorf("%s: captured a symlinked disk", name)
		}
		if all, _ := s.List(); len(all) != 0 {
			t.Errorf("%s: published %d disks", name, len(all))
		}
		if !exist(secret) || exist(p.DiskFor(instance.DiskQcow2)) {
			t.Errorf("%s: the capture moved the file or made an overlay", name)
		}
	}
}

// A qcow2 disk can keep its clusters in an external data file that its
// header names: QEMU reads and writes the guest's disk there, so such a
// disk, with or without a backing file, would hand the guest a host file.
func TestCheckOverlayRefusesExternalData(t *testing.T) {
	s := newStore(t)
	g := publishTest(t, s, testKey(1), []byte("golden"))
	secret := filepath.Join(t.TempDir(), "id_ed25519")
	os.WriteFile(secret, []byte("secret"), 0o600)
	overlay := filepath.Join(t.TempDir(), "disk.qcow2")
	be := binary.BigEndian
	for _, c := range []struct {
		name     string
		backing  bool
		ext, bit bool
	}{{"standalone, extension and bit", false, true, true}, {"overlay, extension and bit", true, true, true},
		{"overlay, bit only", true, false, true}, {"standalone, extension only", false, true, false}} {
		craftOverlay(t, overlay, g.Disk(), "raw")
		b := readFile(t, overlay)
		const extOff = 104
		if !c.backing {
			be.PutUint64(b[8:], 0)
			be.PutUint32(b[16:], 0)
		}
		if c.ext {
			// The data file's extension after the backing format's, then
			// the end marker, all before the backing name.
			off := extOff + 16
			be.PutUint32(b[off:], 0x44415441)
			be.PutUint32(b[off+4:], uint32(len(secret)))
			copy(b[off+8:], secret)
			end := off + 8 + (len(secret)+7)&^7
			be.PutUint64(b[end:], 0)
			if c.backing {
				name := g.Disk()
				copy(b[end+8:], name)
				be.PutUint64(b[8:], uint64(end+8))
				be.PutUint32(b[16:], uint32(len(name)))
			}
		}
		if c.bit {
			be.PutUint64(b[72:], 1<<2)
		}
		os.WriteFile(overlay, b, 0o600)
		if err := s.CheckOverlay(overlay); err == nil {
			t.Errorf("%s: CheckOverlay accepts a disk whose data is in %s", c.name, secret)
		}
	}
}
