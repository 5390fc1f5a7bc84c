package clonecmd

import (
	"testing"

	"github.com/coworkhq/cowork/cmd/cowork/iostreams"
)

func TestCloneSnapshotFlag(t *testing.T) {
	ios, _, _, _ := iostreams.Test()
	var got *Options
	cmd := NewCmdClone(ios, func(o *Options) error { got = o; return nil })
	cmd.SetArgs([]string{"src", "dst", "--snapshot", "before-upgrade"})
	if err := cmd.Execute(); err != nil || got.Src != "src" || got.Dst != "dst" || got.Snapshot != "before-upgrade" {
		t.Fatalf("%+v %v", got, err)
	}
}
