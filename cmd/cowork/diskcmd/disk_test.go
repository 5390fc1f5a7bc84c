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
	"github.com/coworkhq/cowork/internal/units"
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

func resize(t *testing.T, args ...string) (string, error) {
	t.Helper()
	ios, _, _, errOut := iostreams.Test()
	name := "box"
	cmd := NewCmdDisk(ios, &name)
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
	out, err := resize(t, "3GiB")
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
	_, err = resize(t, "2GiB")
	if err == nil || errors.As(err, &fe) || !strings.Contains(err.Error(), "box is running; stop it first with `cowork stop --name box`") {
		t.Errorf("a running instance: %v", err)
	}
	if f, c := diskSize(t, p); f != int64(units.GiB) || c != units.GiB {
		t.Errorf("resizing a running instance changed the disk: file %d, config %s", f, c)
	}
}
