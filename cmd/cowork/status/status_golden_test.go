package status

import (
	"strings"
	"testing"
)

// The disk line says which golden disk an instance came from, and whether
// it needs it (an overlay) or not (a reflink clone).
func TestGoldenNote(t *testing.T) {
	key := strings.Repeat("3c", 32)
	for _, tc := range []struct {
		s    Status
		want string
	}{
		{Status{}, ""},
		{Status{Golden: key, DiskFormat: "qcow2"}, " (an overlay on golden disk 3c3c3c3c3c3c)"},
		{Status{Golden: key, DiskFormat: "raw"}, " (cloned from golden disk 3c3c3c3c3c3c)"},
		{Status{Golden: "short", DiskFormat: "qcow2"}, ""},
	} {
		if got := goldenNote(tc.s); got != tc.want {
			t.Errorf("%+v: %q, want %q", tc.s, got, tc.want)
		}
	}
}
