package diskcmd

import (
	"errors"
	"os"
	"strings"
	"testing"

	"github.com/coworkhq/cowork/cmd/cowork/cmdutil"
	"github.com/coworkhq/cowork/cmd/cowork/iostreams"
	"github.com/coworkhq/cowork/hostd/instance"
	"github.com/coworkhq/cowork/hostd/instance/instancetest"
	"github.com/coworkhq/cowork/units"
)

// stopped makes an instance "box" with a 1 GiB sparse disk.
func stopped(t *testing.T) instance.Paths {
	t.Helper()
	p, _ := instancetest.New(t, instance.Config{Name: "box", CPUs: 1, Memory: units.GiB, Disk: units.GiB, Arch: "arm64", Boot: instance.BootEFI})
	if err := os.WriteFile(p.Disk(), nil, 0o600); err != nil {
		t.Fatal(err)
	}
	os.Truncate(p.Disk(), int64(units.GiB))
	return p
}

// resize runs `cowork disk resize args...` without a terminal.
func resize(t *testing.T, args ...string) (string, error) {
	t.Helper()
	ios, _, _, _ := iostreams.Test()
	return resizeOn(t, ios, args...)
}

// resizeTyping runs it as a person at a terminal typing typed.
func resizeTyping(t *testing.T, typed string, args ...string) (string, error) {
	t.Helper()
	ios, in, _, _ := iostreams.Test()
	ios.SetStdinTTY(true)
	in.WriteString(typed)
	return resizeOn(t, ios, args...)
}

func resizeOn(t *testing.T, ios *iostreams.IOStreams, args ...string) (string, error) {
	t.Helper()
	errOut := &strings.Builder{}
	ios.ErrOut = errOut
	name := "box"
	cmd := NewCmdDisk(ios, &name, nil)
	cmd.SetArgs(append([]string{"resize"}, args...))
	cmd.SilenceErrors, cmd.SilenceUsage = true, true
	err := cmd.Execute()
	return errOut.String(), err
}

func diskSize(t *testing.T, p instance.Paths) (file int64, config units.Size) {
	t.Helper()
	st, err := os.Stat(p.Disk())
	if err != nil {
		t.Fatal(err)
	}
	c, err := instance.Load("box")
	if err != nil {
		t.Fatal(err)
	}
	return st.Size(), c.Disk
}

func TestResizeGrows(t *testing.T) {
	p := stopped(t)
	out, err := resize(t, "--yes", "3GiB")
	if err != nil {
		t.Fatal(err)
	}
	if f, c := diskSize(t, p); f != int64(3*units.GiB) || c != 3*units.GiB {
		t.Errorf("after growing: file %d, config %s", f, c)
	}
	if !strings.Contains(out, "box's disk is 3 GiB") {
		t.Errorf("output %q", out)
	}
}

func TestResizeRefusals(t *testing.T) {
	p := stopped(t)
	var fe *cmdutil.FlagError
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"512MiB"}, "never shrink"},
		{[]string{"--yes", "512MiB"}, "never shrink"},
		{[]string{"2GiB"}, "pass --yes when stdin is not a terminal"},
		{[]string{"lots"}, ""},
		{[]string{}, "one SIZE"},
		{[]string{"2GiB", "3GiB"}, "one SIZE"},
	} {
		_, err := resize(t, c.args...)
		if !errors.As(err, &fe) || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%q: %v, want a usage error saying %q", c.args, err, c.want)
		}
	}
	if f, c := diskSize(t, p); f != int64(units.GiB) || c != units.GiB {
		t.Errorf("a refused resize changed the disk: file %d, config %s", f, c)
	}

	// A running instance (its hostd holds the lock) is not touched.
	l, err := instance.TryLock(p)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Release()
	_, err = resize(t, "--yes", "2GiB")
	if err == nil || errors.As(err, &fe) || !strings.Contains(err.Error(), "box is running; stop it first with `cowork stop --name box`") {
		t.Errorf("a running instance: %v", err)
	}
	if f, c := diskSize(t, p); f != int64(units.GiB) || c != units.GiB {
		t.Errorf("resizing a running instance changed the disk: file %d, config %s", f, c)
	}
}

func TestResizeFlags(t *testing.T) {
	for _, c := range []struct {
		args []string
		yes  bool
	}{{[]string{"2GiB"}, false}, {[]string{"-y", "2GiB"}, true}, {[]string{"2GiB", "--yes"}, true}} {
		ios, _, _, _ := iostreams.Test()
		name := "box"
		var got *ResizeOptions
		cmd := NewCmdDisk(ios, &name, func(o *ResizeOptions) error { got = o; return nil })
		cmd.SetArgs(append([]string{"resize"}, c.args...))
		if err := cmd.Execute(); err != nil {
			t.Fatal(err)
		}
		if got.Name != "box" || got.Size != "2GiB" || got.Yes != c.yes {
			t.Errorf("%q: %+v", c.args, got)
		}
	}
}

// On a terminal resize asks, and grows only on a yes; what the disk holds
// stays where it was, and the new end reads as zeros.
func TestResizeAsksAndKeepsTheData(t *testing.T) {
	p := stopped(t)
	marks := map[int64]string{0: "boot sector", int64(units.GiB) - 9: "last word"}
	f, err := os.OpenFile(p.Disk(), os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	for off, m := range marks {
		f.WriteAt([]byte(m), off)
	}
	f.Close()

	for _, no := range []string{"n\n", "\n", ""} {
		out, err := resizeTyping(t, no, "3GiB")
		if cmdutil.ExitCode(err) != 1 || !strings.Contains(out, "Grow box's disk from 1 GiB to 3 GiB? It can never shrink back. [y/N] ") ||
			!strings.Contains(out, "not resized") {
			t.Errorf("answer %q: %v\n%s", no, err, out)
		}
		if fs, c := diskSize(t, p); fs != int64(units.GiB) || c != units.GiB {
			t.Fatalf("answer %q grew the disk: file %d, config %s", no, fs, c)
		}
	}
	if out, err := resizeTyping(t, "y\n", "3GiB"); err != nil {
		t.Fatalf("answer y: %v\n%s", err, out)
	}
	if fs, c := diskSize(t, p); fs != int64(3*units.GiB) || c != 3*units.GiB {
		t.Fatalf("answer y: file %d, config %s", fs, c)
	}
	f, err = os.Open(p.Disk())
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	for off, m := range marks {
		got := make([]byte, len(m))
		if _, err := f.ReadAt(got, off); err != nil || string(got) != m {
			t.Errorf("at %d the disk holds %q (%v), want %q", off, got, err, m)
		}
	}
	for _, off := range []int64{int64(units.GiB), int64(3*units.GiB) - 1<<20} {
		got := make([]byte, 1<<20)
		if _, err := f.ReadAt(got, off); err != nil || strings.Trim(string(got), "\x00") != "" {
			t.Errorf("the grown part at %d is not zeros (%v)", off, err)
		}
	}

	// The same size again asks nothing and changes nothing.
	if out, err := resize(t, "3GiB"); err != nil || !strings.Contains(out, "box's disk is 3 GiB already") {
		t.Errorf("the same size: %v\n%s", err, out)
	}
}
