//go:build linux

package main

import (
	"os/exec"
	"slices"
	"testing"
)

// timeInit reads init's own progress: a row per step and per phase, a
// phase once (its first line, when it began), then the total.
func TestTimeInitReadsInitsProgress(t *testing.T) {
	out := `Creating cloud (2 CPUs, 1 GiB memory, 3 GiB disk, workspace /w)
  download  done (600ms)
  verify    done (200ms)
  convert   done (1.5s)
  resize    3 GiB disk (grows in the guest at boot)
[  0.3s] VM started
[  6.1s] guest kernel booting
[110.9s] agent connected (agent v1)
[111.0s] provisioning the guest
[114.6s] provisioning: stage: updating package lists
[150.2s] provisioning: stage: installing packages
[189.1s] ready
`
	var tb table
	if err := timeInit(&tb, exec.Command("printf", "%s", out), "init", "test"); err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, r := range tb.rows {
		got = append(got, r.name+" = "+r.ours)
	}
	want := []string{
		"init → image downloaded = 0.60 s",
		"init → image verified = 0.20 s",
		"init → image converted = 1.50 s",
		"init → VM started = 0.3 s",
		"init → guest kernel booting = 6.1 s",
		"init → agent connected = 110.9 s",
		"init → provisioning the guest = 111.0 s",
		"init → ready = 189.1 s",
	}
	if len(got) != len(want)+1 || !slices.Equal(got[:len(want)], want) {
		t.Errorf("rows:\n%q\nwant (then the total):\n%q", got, want)
	}
}
