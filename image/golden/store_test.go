package golden

import (
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/coworkhq/cowork/hostd/instance"
)

func asInUse(err error, target **InUseError) bool { return errors.As(err, target) }

// A golden disk an overlay uses cannot be removed, and says by whom;
// once that instance is gone it can. Prune removes only unused ones and
// the leftovers of interrupted captures and removals.
func TestRemoveAndPrune(t *testing.T) {
	noReflinks(t)
	s := newStore(t)
	used := publishTest(t, s, testKey(1), []byte("used"))
	unused := publishTest(t, s, testKey(2), []byte("unused"))
	q := instance.Paths(filepath.Join(s.Home, "user"))
	os.MkdirAll(q.Dir(), 0o700)
	if _, err := s.Clone(used, q, diskSize); err != nil {
		t.Fatal(err)
	}
	// An instance whose overlay cannot be read may need any golden disk.
	broken := filepath.Join(s.Home, "broken")
	os.MkdirAll(broken, 0o700)
	os.WriteFile(filepath.Join(broken, "disk.qcow2"), []byte("QFI\xfbtruncated"), 0o600)

	users, err := s.Dependants(used)
	if err != nil || !reflect.DeepEqual(users, []string{"broken", "user"}) {
		t.Errorf("Dependants = %v, %v", users, err)
	}
	var inUse *InUseError
	err = s.Remove(used)
	if !asInUse(err, &inUse) || inUse.Key != used.Key || !reflect.DeepEqual(inUse.Users, []string{"broken", "user"}) ||
		!strings.Contains(err.Error(), "user") || !strings.Contains(err.Error(), "cowork delete") {
		t.Fatalf("Remove of a golden disk in use: %v", err)
	}
	if g, _ := s.Lookup(used.Key); g == nil {
		t.Fatalf("the refused removal removed it")
	}
	os.RemoveAll(broken)

	os.WriteFile(filepath.Join(s.Home, "a-file"), nil, 0o600) // no instance
	os.Mkdir(filepath.Join(s.Dir, tmpDir+"abandoned"), 0o700)
	os.Mkdir(filepath.Join(s.Dir, tmpDir+"rm-"+unused.Key), 0o700)
	removed, err := s.Prune()
	if err != nil || len(removed) != 1 || removed[0].Key != unused.Key {
		t.Fatalf("Prune removed %v, %v; want only the unused disk", removed, err)
	}
	if exist(unused.Dir) || len(leftovers(t, s)) != 0 {
		t.Errorf("Prune left %s or %v", unused.Dir, leftovers(t, s))
	}
	if g, _ := s.Lookup(used.Key); g == nil {
		t.Fatalf("Prune removed a golden disk in use")
	}

	os.RemoveAll(q.Dir())
	if err := s.Remove(used); err != nil {
		t.Fatalf("Remove once unused: %v", err)
	}
	if exist(used.Dir) || len(leftovers(t, s)) != 0 {
		t.Errorf("Remove left %v", leftovers(t, s))
	}
	if all, err := s.List(); err != nil || len(all) != 0 {
		t.Errorf("List after removing all: %v, %v", all, err)
	}
}

// Find takes a prefix of 4 hex digits or more that names one disk.
func TestFind(t *testing.T) {
	s := newStore(t)
	// Keys 0 and 1 of testKey, and a pair sharing a 4-digit prefix.
	var a, b string
	seen := map[string]string{}
	for i := 0; a == ""; i++ {
		k := testKey(i)
		if o, ok := seen[k[:4]]; ok {
			a, b = o, k
		}
		seen[k[:4]] = k
	}
	publishTest(t, s, a, []byte("a"))
	publishTest(t, s, b, []byte("b"))

	if g, err := s.Find(a[:12]); err != nil || g.Key != a {
		t.Errorf("Find(%s) = %v, %v", a[:12], g, err)
	}
	if g, err := s.Find(b); err != nil || g.Key != b {
		t.Errorf("Find(whole key) = %v, %v", g, err)
	}
	for prefix, want := range map[string]string{
		a[:4]:         "more than one",
		a[:3]:         "at least 4 hex digits",
		"ABCD":        "at least 4 hex digits",
		"../..":       "at least 4 hex digits",
		"zzzzzzzz":    "at least 4 hex digits",
		unknown(a, b): "no golden disk",
	} {
		if g, err := s.Find(prefix); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("Find(%q) = %v, %v; want an error saying %q", prefix, g, err, want)
		}
	}
}

// unknown is a 4-digit prefix of neither key.
func unknown(keys ...string) string {
	for _, p := range []string{"0000", "1111", "2222", "3333"} {
		ok := true
		for _, k := range keys {
			ok = ok && !strings.HasPrefix(k, p)
		}
		if ok {
			return p
		}
	}
	panic("no unknown prefix")
}

// List skips what is not a published golden disk and sorts by age.
func TestList(t *testing.T) {
	s := newStore(t)
	if all, err := s.List(); err != nil || all != nil {
		t.Errorf("List of no store: %v, %v", all, err)
	}
	older := publishTest(t, s, testKey(1), []byte("1"))
	m := testMeta(testKey(2), "x")
	m.Created = older.Created.Add(-1)
	tmp, _ := os.MkdirTemp(s.Dir, tmpDir)
	os.WriteFile(filepath.Join(tmp, diskName), []byte("2"), 0o600)
	if _, err := s.publish(tmp, m); err != nil {
		t.Fatal(err)
	}
	os.Mkdir(filepath.Join(s.Dir, tmpDir+"x"), 0o700)
	os.Mkdir(filepath.Join(s.Dir, "not-a-key"), 0o700)
	os.Mkdir(filepath.Join(s.Dir, testKey(3)), 0o700) // no meta.json
	all, err := s.List()
	if err != nil || len(all) != 2 || all[0].Key != testKey(2) || all[1].Key != testKey(1) {
		t.Errorf("List = %v, %v", all, err)
	}
}
