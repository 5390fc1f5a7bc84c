package machine

import (
	"slices"
	"testing"
)

// A backend's own files are what hostd records; a backend that names none
// is taken to have written QEMU's two.
func TestSavedFileNames(t *testing.T) {
	qemu := &Saved{Dir: "/s"}
	if got := qemu.FileNames(); !slices.Equal(got, []string{DeviceStateFile, RAMFile}) {
		t.Errorf("no files named: %v, want QEMU's two", got)
	}
	vz := &Saved{Dir: "/s", Files: []string{"vm.state"}}
	if got := vz.FileNames(); !slices.Equal(got, []string{"vm.state"}) {
		t.Errorf("the backend's files: %v, want vm.state alone", got)
	}
}
