package instance

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/zalando/go-keyring"

	"github.com/coworkhq/cowork/hostd/secretstore"
)

// A clone gets its source's values as entries of its own, wherever they
// are kept; forgetting the clone's keychain entries leaves the source's.
func TestCopySecretValues(t *testing.T) {
	keyring.MockInit()
	root := t.TempDir()
	sp, dp := Paths(filepath.Join(root, "src")), Paths(filepath.Join(root, "dst"))
	os.Mkdir(sp.Dir(), 0o700)
	os.Mkdir(dp.Dir(), 0o700)
	src := secretstore.Open(sp.Dir())
	src.Set(secretstore.File, "A", "value-in-a-file")
	src.Set(secretstore.Keychain, "B", "value-in-a-keychain")
	cfg := &Config{Name: "src", Secrets: []Secret{{Name: "A", Store: secretstore.File}, {Name: "B", Store: secretstore.Keychain}}}
	if err := copySecretValues(cfg, sp, dp); err != nil {
		t.Fatal(err)
	}
	dst := secretstore.Open(dp.Dir())
	if a, _ := dst.Get(secretstore.File, "A"); a != "value-in-a-file" {
		t.Fatalf("the clone's A: %q", a)
	}
	if b, _ := dst.Get(secretstore.Keychain, "B"); b != "value-in-a-keychain" {
		t.Fatalf("the clone's B: %q", b)
	}
	ForgetSecrets(cfg.Secrets, dp)
	if _, err := dst.Get(secretstore.Keychain, "B"); err == nil {
		t.Fatal("the clone's keychain entry is still there")
	}
	if b, _ := src.Get(secretstore.Keychain, "B"); b != "value-in-a-keychain" {
		t.Fatalf("the source's B went with the clone's: %q", b)
	}
	// A value its source no longer holds: the clone is refused, naming it.
	src.Delete(secretstore.File, "A")
	if err := copySecretValues(cfg, sp, Paths(filepath.Join(root, "dst2"))); err == nil {
		t.Fatal("a clone of a secret without its value was made")
	}
}
