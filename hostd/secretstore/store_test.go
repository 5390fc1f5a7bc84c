package secretstore

import (
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"

	"github.com/zalando/go-keyring"
)

func TestFileStore(t *testing.T) {
	dir := t.TempDir()
	s := Open(dir)
	if err := s.Set(File, "A", "value-a"); err != nil {
		t.Fatal(err)
	}
	if err := s.Set(File, "B", "value-b"); err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(filepath.Join(dir, FileName))
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("the file: %v %v", fi, err)
	}
	if v, err := s.Get(File, "A"); err != nil || v != "value-a" {
		t.Fatalf("Get A: %q %v", v, err)
	}
	if err := s.Delete(File, "A"); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Get(File, "A"); err == nil || !strings.Contains(err.Error(), "cowork secret set A") {
		t.Fatalf("Get of a deleted one: %v", err)
	}
	if v, _ := s.Get(File, "B"); v != "value-b" {
		t.Fatalf("B went with A: %q", v)
	}
	if err := s.Delete(File, "never-set"); err != nil {
		t.Fatalf("deleting what is not there: %v", err)
	}
	entries, _ := os.ReadDir(dir)
	if len(entries) != 2 { // the file and its lock: no temporary file left
		t.Fatalf("left behind: %v", entries)
	}
}

func TestKeyringStoreIsPerInstance(t *testing.T) {
	keyring.MockInit()
	a, b := Open("/home/u/.cowork/a"), Open("/home/u/.cowork/b")
	if err := a.Set(Keychain, "TOKEN", "for-a"); err != nil {
		t.Fatal(err)
	}
	if _, err := b.Get(Keychain, "TOKEN"); err == nil {
		t.Fatal("b read a's secret")
	}
	if v, err := a.Get(Keychain, "TOKEN"); err != nil || v != "for-a" {
		t.Fatalf("%q %v", v, err)
	}
	if err := a.Delete(Keychain, "TOKEN"); err != nil {
		t.Fatal(err)
	}
	if err := a.Delete(Keychain, "TOKEN"); err != nil {
		t.Fatalf("a second delete: %v", err)
	}
}

func TestPreferredFileWhenAsked(t *testing.T) {
	t.Setenv("COWORK_SECRET_STORE", "file")
	if p := Preferred(); p != File {
		t.Fatalf("Preferred() = %q", p)
	}
	t.Setenv("COWORK_SECRET_STORE", "")
	t.Setenv("DBUS_SESSION_BUS_ADDRESS", "")
	want := File // Linux without a session bus
	if runtime.GOOS == "darwin" {
		want = Keychain
	}
	if p := Preferred(); p != want {
		t.Fatalf("without a session bus: %q, want %q", p, want)
	}
}
