package initcmd

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/coworkhq/cowork/cmd/cowork/iostreams"
	"github.com/coworkhq/cowork/hostd/instance"
	"github.com/coworkhq/cowork/internal/hostdwire"
	"github.com/coworkhq/cowork/units"
)

// init clones a golden disk that exists and fits, keeps one when there is
// none, and does neither with --no-golden or when the lookup fails.
func TestInitLooksUpAGoldenDisk(t *testing.T) {
	key := strings.Repeat("ab", 32)
	for _, tc := range []struct {
		name      string
		noGolden  bool
		answer    hostdwire.GoldenKey
		err       error
		wantClone bool
		wantKeep  bool
		wantNote  string
	}{
		{name: "found", answer: hostdwire.GoldenKey{Key: key, Found: true, Size: int64(2 * units.GiB)}, wantClone: true, wantNote: "cloning"},
		{name: "none yet", answer: hostdwire.GoldenKey{Key: key}, wantKeep: true},
		{name: "bigger than --disk", answer: hostdwire.GoldenKey{Key: key, Found: true, Size: int64(20 * units.GiB)}, wantNote: "provisioning from scratch"},
		{name: "lookup failed", err: errors.New("no daemon"), wantNote: "cannot look for a golden disk (no daemon)"},
		{name: "--no-golden", noGolden: true, answer: hostdwire.GoldenKey{Key: key, Found: true}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ios, _, _, errOut := iostreams.Test()
			asked := false
			o := &Options{IO: ios, NoGolden: tc.noGolden, GoldenKey: func(context.Context, *instance.Config, instance.Sources) (hostdwire.GoldenKey, error) {
				asked = true
				return tc.answer, tc.err
			}}
			c := &instance.Config{Name: "box", Disk: 10 * units.GiB}
			src := instance.Sources{Image: "/img"}
			keep := o.lookupGolden(context.Background(), c, &src)
			if tc.noGolden && asked {
				t.Error("--no-golden still looked a golden disk up")
			}
			if got := src.Golden != ""; got != tc.wantClone || (got && src.Golden != key) {
				t.Errorf("clone %q, want a clone: %v", src.Golden, tc.wantClone)
			}
			if keep != tc.wantKeep {
				t.Errorf("keep %v, want %v", keep, tc.wantKeep)
			}
			if !strings.Contains(errOut.String(), tc.wantNote) {
				t.Errorf("stderr lacks %q:\n%s", tc.wantNote, errOut)
			}
		})
	}
}
