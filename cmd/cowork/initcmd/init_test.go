package initcmd

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/coworkhq/cowork"
	"github.com/coworkhq/cowork/cmd/cowork/cmdutil"
	"github.com/coworkhq/cowork/cmd/cowork/iostreams"
	"github.com/coworkhq/cowork/hostd/instance"
	"github.com/coworkhq/cowork/image/inspect"
	"github.com/coworkhq/cowork/internal/hostdwire"
)

// parse runs `cowork init args...` up to its Options.
func parse(t *testing.T, args ...string) *Options {
	t.Helper()
	ios, _, _, _ := iostreams.Test()
	name := "box"
	var got *Options
	cmd := NewCmdInit(ios, &name, func(o *Options) error { got = o; return nil })
	cmd.SetArgs(args)
	if err := cmd.Execute(); err != nil {
		t.Fatal(err)
	}
	// What cowork-hostd answers, in process: the CLI does not link it.
	got.Inspect = func(_ context.Context, img, kernel string) (hostdwire.Inspection, error) {
		return inspect.Facts(img, kernel), nil
	}
	return got
}

// diskImage writes a small raw disk image at path (an empty MBR) and
// returns its contents.
func diskImage(t *testing.T, path string) []byte {
	t.Helper()
	b := make([]byte, 64<<10)
	copy(b[510:], "\x55\xaa")
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
	return b
}

// created makes an instance "box" from a small raw image, as an init that
// stopped before the guest was provisioned leaves it.
func created(t *testing.T) (*Options, instance.Paths) {
	t.Helper()
	home := t.TempDir()
	t.Setenv("COWORK_HOME", home)
	img := filepath.Join(home, "img.raw")
	diskImage(t, img)
	args := []string{"--image", img, "--workspace", filepath.Join(home, "ws"), "--cpus", "1", "--memory", "256MiB", "--disk", "1GiB", "--no-start"}
	o := parse(t, args...)
	c, src, err := o.Config()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := cowork.Create(context.Background(), c, src, nil); err != nil {
		t.Fatal(err)
	}
	p, _ := instance.PathsFor("box")
	return parse(t, args...), p
}

func TestInitResumesAnUnprovisionedInstance(t *testing.T) {
	o, p := created(t)
	// A disk resize cut short, or any disk short of its size, grows.
	if err := os.Truncate(p.Disk(), 1<<20); err != nil {
		t.Fatal(err)
	}
	ios, _, _, errOut := iostreams.Test()
	o.IO = ios
	if err := run(context.Background(), o); err != nil {
		t.Fatalf("resume: %v\n%s", err, errOut)
	}
	if !strings.Contains(errOut.String(), "Resuming the interrupted init of box (1 CPUs") {
		t.Errorf("no resuming line:\n%s", errOut)
	}
	if st, err := os.Stat(p.Disk()); err != nil || st.Size() != 1<<30 {
		t.Errorf("the disk was not grown back: %v %v", st.Size(), err)
	}

	// Once the guest reported itself provisioned, init refuses.
	os.WriteFile(p.Provisioned(), nil, 0o600)
	err := run(context.Background(), o)
	var exists *instance.ExistsError
	if !errors.As(err, &exists) || !strings.Contains(err.Error(), "cowork start --name box") {
		t.Errorf("a provisioned instance: %v", err)
	}
}

func TestInitResumeRefusesOtherSettings(t *testing.T) {
	_, p := created(t)
	home := filepath.Dir(p.Dir())
	ios, _, _, _ := iostreams.Test()
	o2 := parse(t, "--image", filepath.Join(home, "img.raw"), "--workspace", filepath.Join(home, "ws"), "--cpus", "2", "--memory", "256MiB", "--disk", "2GiB", "--no-start")
	o2.IO = ios
	err := run(context.Background(), o2)
	if err == nil || !strings.Contains(err.Error(), "differ in --cpus, --disk;") || !strings.Contains(err.Error(), "cowork delete --name box") {
		t.Fatalf("conflicting flags: %v", err)
	}
	// Flags left out take the saved values, whatever their defaults.
	o3 := parse(t, "--no-start")
	o3.IO = ios
	if err := run(context.Background(), o3); err != nil {
		t.Errorf("resume without flags: %v", err)
	}
}

func TestInitResumeNeedsTheDisk(t *testing.T) {
	o, p := created(t)
	os.Remove(p.Disk())
	ios, _, _, _ := iostreams.Test()
	o.IO = ios
	err := run(context.Background(), o)
	if err == nil || !strings.Contains(err.Error(), "incomplete") || !strings.Contains(err.Error(), "cowork delete --name box") {
		t.Errorf("a missing disk: %v", err)
	}
}

// An interrupted Create leaves a directory without config.json, and a
// disk only under its temporary name: init starts that over.
func TestInitRedoesAnIncompleteCreate(t *testing.T) {
	o, p := created(t)
	os.Remove(p.Config())
	os.Rename(p.Disk(), p.Disk()+".tmp")
	ios, _, _, errOut := iostreams.Test()
	o.IO = ios
	if err := run(context.Background(), o); err != nil {
		t.Fatalf("%v\n%s", err, errOut)
	}
	if !strings.Contains(errOut.String(), "stopped before its disk was complete") {
		t.Errorf("no note:\n%s", errOut)
	}
	if _, err := instance.Load("box"); err != nil {
		t.Error(err)
	}
	if _, err := os.Stat(p.Disk() + ".tmp"); err == nil {
		t.Error("the half-written disk survived")
	}
}

func TestInitVerifiesALocalImage(t *testing.T) {
	home := t.TempDir()
	t.Setenv("COWORK_HOME", home)
	img := filepath.Join(home, "img.raw")
	sum := sha256.Sum256(diskImage(t, img))
	base := []string{"--image", img, "--workspace", filepath.Join(home, "ws"), "--memory", "256MiB", "--disk", "1GiB", "--no-start"}

	o := parse(t, append(base, "--image-sha256", strings.Repeat("ab", 32))...)
	ios, _, _, _ := iostreams.Test()
	o.IO = ios
	err := run(context.Background(), o)
	if err == nil || !strings.Contains(err.Error(), "sha256 is "+hex.EncodeToString(sum[:])) {
		t.Fatalf("a wrong digest: %v", err)
	}
	if _, err := os.Stat(filepath.Join(home, "box")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("a failed verify left the instance directory: %v", err)
	}
	if _, err := os.Stat(img); err != nil {
		t.Errorf("the local image went: %v", err)
	}

	o = parse(t, append(base, "--image-sha256", "sha256:"+hex.EncodeToString(sum[:]))...)
	o.IO = ios
	if err := run(context.Background(), o); err != nil {
		t.Fatalf("the right digest: %v", err)
	}

	for _, bad := range [][]string{{"--image-sha256", "abc", "--image", img}, {"--image-sha256", strings.Repeat("ab", 32)}} {
		var fe *cmdutil.FlagError
		if _, _, err := parse(t, bad...).Config(); !errors.As(err, &fe) {
			t.Errorf("%q: %v, want a usage error", bad, err)
		}
	}
}

func TestInitMaxFlows(t *testing.T) {
	home := t.TempDir()
	img := filepath.Join(home, "img.raw")
	diskImage(t, img)
	args := []string{"--workspace", home, "--image", img}
	c, _, err := parse(t, args...).Config()
	if err != nil || c.Network.MaxFlows != 0 {
		t.Fatalf("by default: %+v %v; want 0 (netstack's default)", c.Network, err)
	}
	c, _, err = parse(t, append(args, "--max-flows", "5000")...).Config()
	if err != nil || c.Network.MaxFlows != 5000 {
		t.Fatalf("--max-flows 5000: %+v %v", c.Network, err)
	}
	if _, _, err := parse(t, append(args, "--max-flows", "0")...).Config(); !errors.As(err, new(*cmdutil.FlagError)) || !strings.Contains(err.Error(), "--max-flows 0") {
		t.Fatalf("--max-flows 0: %v", err)
	}
}

// init over an existing name never overwrites: a finished instance is
// refused whatever the flags, and a folder that holds more than an
// interrupted init leaves is refused before anything is downloaded or
// made. Either way the disk, the config and the folder stay as they were.
func TestInitNeverOverwritesAnInstance(t *testing.T) {
	o, p := created(t)
	os.WriteFile(p.Provisioned(), nil, 0o600)
	if err := os.WriteFile(p.Disk(), []byte("the guest's work"), 0o600); err != nil {
		t.Fatal(err)
	}
	config, _ := os.ReadFile(p.Config())
	home := filepath.Dir(p.Dir())
	for _, args := range [][]string{nil, {"--cpus", "2", "--disk", "2GiB", "--image", filepath.Join(home, "img.raw"), "--no-start"}} {
		o := o
		if args != nil {
			o = parse(t, args...)
		}
		ios, _, _, _ := iostreams.Test()
		o.IO = ios
		if err := run(context.Background(), o); !errors.As(err, new(*instance.ExistsError)) {
			t.Errorf("init %q over a finished instance: %v", args, err)
		}
		if b, _ := os.ReadFile(p.Disk()); string(b) != "the guest's work" {
			t.Fatalf("init %q: the disk holds %q", args, b)
		}
		if b, _ := os.ReadFile(p.Config()); string(b) != string(config) {
			t.Fatalf("init %q changed the config:\n%s", args, b)
		}
	}

	// The same instance, its config gone: it has run (it holds logs and
	// the provisioned marker), so it is no interrupted init's.
	os.Remove(p.Config())
	ios, _, _, errOut := iostreams.Test()
	o.IO = ios
	o.Image = "https://example.invalid/never-downloaded.img"
	err := run(context.Background(), o)
	if err == nil || !strings.Contains(err.Error(), p.Dir()+" exists and is not an instance") || strings.Contains(errOut.String(), "making it again") {
		t.Fatalf("init over a folder it did not make: %v\n%s", err, errOut)
	}
	if b, _ := os.ReadFile(p.Disk()); string(b) != "the guest's work" {
		t.Fatalf("the disk holds %q", b)
	}
}

// --mount adds folders besides the workspace; a bad one is a usage error
// naming it.
func TestInitMounts(t *testing.T) {
	root := t.TempDir()
	t.Setenv("COWORK_HOME", filepath.Join(root, "home"))
	img := filepath.Join(root, "img.raw")
	diskImage(t, img)
	data := filepath.Join(root, "data")
	os.Mkdir(data, 0o755)
	args := []string{"--workspace", filepath.Join(root, "ws"), "--image", img}
	c, _, err := parse(t, append(args, "--mount", data+":/data:ro", "--mount", data+"/../img.raw:/x")...).Config()
	if !errors.As(err, new(*cmdutil.FlagError)) || !strings.Contains(err.Error(), "img.raw: not a folder") {
		t.Fatalf("a mount of a file: %+v %v", c, err)
	}
	c, _, err = parse(t, append(args, "--mount", data+":/data:ro")...).Config()
	if err != nil || len(c.Mounts) != 1 || c.Mounts[0] != (instance.Mount{Host: data, Guest: "/data", ReadOnly: true}) {
		t.Fatalf("--mount %s:/data:ro: %+v %v", data, c.Mounts, err)
	}
	if _, _, err := parse(t, append(args, "--mount", data+":/var/data")...).Config(); !errors.As(err, new(*cmdutil.FlagError)) || !strings.Contains(err.Error(), "system folder /var") {
		t.Fatalf("a mount over /var: %v", err)
	}
}

// --with docker is kept in the config (and with it in the golden key);
// anything else, or docker twice, is a usage error before anything is made.
func TestInitWith(t *testing.T) {
	root := t.TempDir()
	t.Setenv("COWORK_HOME", filepath.Join(root, "home"))
	img := filepath.Join(root, "img.raw")
	diskImage(t, img)
	args := []string{"--workspace", filepath.Join(root, "ws"), "--image", img}
	c, _, err := parse(t, append(args, "--with", "docker")...).Config()
	if err != nil || len(c.With) != 1 || c.With[0] != instance.WithDocker {
		t.Fatalf("--with docker: %+v %v", c, err)
	}
	for _, bad := range []struct{ with, want string }{
		{"podman", `--with "podman": cowork does not know it; want one of docker`},
		{"docker,docker", "--with docker is given twice"},
	} {
		_, _, err := parse(t, append(args, "--with", bad.with)...).Config()
		if !errors.As(err, new(*cmdutil.FlagError)) || err.Error() != bad.want {
			t.Errorf("--with %s: %v; want a usage error %q", bad.with, err, bad.want)
		}
	}
}

// An interrupted init resumed with another --with is refused: the guest
// provisions what it was created with.
func TestInitResumeRefusesAnotherWith(t *testing.T) {
	_, p := created(t)
	home := filepath.Dir(p.Dir())
	ios, _, _, _ := iostreams.Test()
	o := parse(t, "--image", filepath.Join(home, "img.raw"), "--workspace", filepath.Join(home, "ws"), "--cpus", "1", "--memory", "256MiB", "--disk", "1GiB", "--no-start", "--with", "docker")
	o.IO = ios
	if err := run(context.Background(), o); err == nil || !strings.Contains(err.Error(), "differ in --with;") {
		t.Fatalf("resume with --with docker: %v", err)
	}
}
