package imagecmd

import (
	"context"
	"encoding/json"
	"errors"
	"strings"
	"testing"

	"github.com/coworkhq/cowork"
	"github.com/coworkhq/cowork/cmd/cowork/cmdutil"
	"github.com/coworkhq/cowork/cmd/cowork/cmdutil/cmdtest"
	"github.com/coworkhq/cowork/cmd/cowork/iostreams"
	"github.com/coworkhq/cowork/units"
)

var (
	diskA = cowork.GoldenDisk{Key: strings.Repeat("ab", 32), Arch: "arm64", Image: "debian-12.qcow2", Provision: "default toolchain",
		Size: 10 * int64(units.GiB), Allocated: 2 * int64(units.GiB), Created: "2026-01-02T03:04:05Z", From: "box", Users: []string{"box", "other"}}
	diskB = cowork.GoldenDisk{Key: strings.Repeat("cd", 32), Arch: "amd64", Image: "ubuntu.img", Provision: "nothing",
		Size: int64(units.GiB), Allocated: 512 * int64(units.MiB), Created: "2026-02-03T04:05:06Z", From: "x", Users: []string{}}
)

// store is a fake golden-disk store that records what it was asked.
type store struct {
	disks   []cowork.GoldenDisk
	removed []string
	rmErr   error
	pruned  int
}

func (s *store) list(context.Context) ([]cowork.GoldenDisk, error) { return s.disks, nil }

func (s *store) remove(_ context.Context, keys ...string) ([]cowork.GoldenDisk, error) {
	s.removed = append(s.removed, keys...)
	var out []cowork.GoldenDisk
	for _, d := range s.disks {
		for _, k := range keys {
			if strings.HasPrefix(d.Key, k) && len(d.Users) == 0 {
				out = append(out, d)
			}
		}
	}
	return out, s.rmErr
}

func (s *store) prune(context.Context) ([]cowork.GoldenDisk, error) {
	s.pruned++
	return []cowork.GoldenDisk{diskB}, nil
}

// run runs `cowork image args...` on s, stdin a terminal when tty,
// typing typed.
func run(t *testing.T, s *store, tty bool, typed string, args ...string) (out, errOut string, err error) {
	t.Helper()
	ios, in, stdout, stderr := iostreams.Test()
	ios.SetStdinTTY(tty)
	in.WriteString(typed)
	cmd := NewCmdImage(ios, func(o *Options) error {
		o.List, o.Remove, o.Prune = s.list, s.remove, s.prune
		return Run(context.Background(), o)
	})
	err = cmdtest.Prepare(cmd, ios, args...).ExecuteContext(context.Background())
	return stdout.String(), stderr.String(), err
}

func TestList(t *testing.T) {
	s := &store{disks: []cowork.GoldenDisk{diskA, diskB}}
	out, _, err := run(t, s, false, "", "ls")
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSuffix(out, "\n"), "\n")
	if len(lines) != 3 {
		t.Fatalf("ls printed %q", out)
	}
	want := [][]string{
		{"KEY", "ARCH", "IMAGE", "PROVISIONED", "WITH", "SIZE", "ON", "DISK", "CREATED", "USED", "BY"},
		{diskA.Key[:12], "arm64", "debian-12.qcow2", "default", "toolchain", units.Size(diskA.Size).String(), units.Size(diskA.Allocated).String(), "2026-01-02", "03:04", "box,other"},
		{diskB.Key[:12], "amd64", "ubuntu.img", "nothing", units.Size(diskB.Size).String(), units.Size(diskB.Allocated).String(), "2026-02-03", "04:05", "-"},
	}
	for i, w := range want {
		if got := strings.Fields(lines[i]); strings.Join(got, " ") != strings.Join(w, " ") {
			t.Errorf("line %d: %q, want %q", i, got, w)
		}
	}
	// The columns line up: every row's KEY column is as wide as the header's.
	col := strings.Index(lines[0], "ARCH")
	for _, l := range lines[1:] {
		if len(l) < col || l[col-1] != ' ' || l[col] == ' ' {
			t.Errorf("misaligned row %q", l)
		}
	}

	out, _, err = run(t, s, false, "", "ls", "--json")
	var got []cowork.GoldenDisk
	if err != nil || json.Unmarshal([]byte(out), &got) != nil || len(got) != 2 || got[0].Key != diskA.Key || got[1].Allocated != diskB.Allocated {
		t.Errorf("ls --json: %q, %v", out, err)
	}
	out, _, err = run(t, &store{}, false, "", "ls", "--json")
	if err != nil || strings.TrimSpace(out) != "[]" {
		t.Errorf("ls --json of none: %q, %v", out, err)
	}
	if _, _, err := run(t, s, false, "", "ls", "extra"); cmdutil.ExitCode(err) != 2 {
		t.Errorf("ls extra: %v", err)
	}
}

// rm says what it removed and fails with the store's error for the rest.
func TestRemove(t *testing.T) {
	refused := errors.New("golden disk abababababab is the base of box, other; delete those instances first")
	s := &store{disks: []cowork.GoldenDisk{diskA, diskB}, rmErr: refused}
	out, _, err := run(t, s, false, "", "rm", "abab", "cdcd")
	if err != refused || cmdutil.ExitCode(err) != 1 {
		t.Errorf("rm returned %v, want the store's error", err)
	}
	if want := "removed " + diskB.Key[:12] + " (" + units.Size(diskB.Allocated).String() + " freed)\n"; out != want {
		t.Errorf("rm printed %q, want %q", out, want)
	}
	if strings.Join(s.removed, " ") != "abab cdcd" {
		t.Errorf("rm asked for %v", s.removed)
	}
	s = &store{}
	if _, _, err := run(t, s, false, "", "rm"); cmdutil.ExitCode(err) != 2 || !strings.Contains(err.Error(), "KEY") || s.removed != nil {
		t.Errorf("rm without keys: %v", err)
	}
}

// prune asks first, and never without a terminal unless --force says yes.
func TestPrune(t *testing.T) {
	s := &store{}
	_, _, err := run(t, s, false, "", "prune")
	if cmdutil.ExitCode(err) != 2 || !strings.Contains(err.Error(), "--force") || s.pruned != 0 {
		t.Errorf("prune without a terminal: %v (pruned %d)", err, s.pruned)
	}
	_, errOut, err := run(t, s, true, "n\n", "prune")
	if cmdutil.ExitCode(err) != 1 || !strings.Contains(errOut, "[y/N]") || !strings.Contains(errOut, "nothing removed") || s.pruned != 0 {
		t.Errorf("prune answered no: %v, %q (pruned %d)", err, errOut, s.pruned)
	}
	out, _, err := run(t, s, true, "y\n", "prune")
	if err != nil || s.pruned != 1 || out != "removed "+diskB.Key[:12]+"\n" {
		t.Errorf("prune answered yes: %v, %q (pruned %d)", err, out, s.pruned)
	}
	out, errOut, err = run(t, s, false, "", "prune", "--force")
	if err != nil || s.pruned != 2 || out != "removed "+diskB.Key[:12]+"\n" ||
		!strings.Contains(errOut, "1 golden disk removed, "+units.Size(diskB.Allocated).String()+" freed") {
		t.Errorf("prune --force: %v, %q, %q (pruned %d)", err, out, errOut, s.pruned)
	}
	if _, _, err := run(t, s, false, "", "frobnicate"); cmdutil.ExitCode(err) != 2 {
		t.Errorf("image frobnicate: %v", err)
	}
}
