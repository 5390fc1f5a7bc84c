//go:build linux

package main

import (
	"encoding/json"
	"fmt"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/coworkhq/cowork/hostd/instance"
)

// goldenRows measures golden disks (issue 18) after a first init, which
// took first and kept its provisioned disk: second, an init of the same
// image and provisioning, clones it; third, created and not started,
// gives a clone's disk space right after its creation against the golden
// disk's. Each runs with the earlier instances stopped: one guest at a
// time.
func goldenRows(t *table, cowork string, first time.Duration, second, third *exec.Cmd) error {
	name := func(cmd *exec.Cmd) string {
		for i, a := range cmd.Args {
			if a == "--name" && i+1 < len(cmd.Args) {
				return cmd.Args[i+1]
			}
		}
		return instance.DefaultName
	}
	stopAll := func() error {
		names, err := instance.List()
		if err != nil {
			return err
		}
		for _, n := range names {
			if out, err := exec.Command(cowork, "--name", n, "stop").CombinedOutput(); err != nil {
				return fmt.Errorf("stop %s: %v\n%s", n, err, out)
			}
		}
		return nil
	}
	if err := stopAll(); err != nil {
		return err
	}
	progress("guest: a second init of the same image and provisioning (a golden disk's clone)")
	defer exec.Command(cowork, "delete", "--name", name(second), "--force").Run()
	again, err := timeInitTotal(t, second, "`cowork init` again, same image and provisioning", "a clone of the golden disk")
	if err != nil {
		return err
	}
	r := ratio(again, first)
	t.add("init again (golden disk clone) ÷ the first init (provisioned, disk kept)", secs(again), secs(first), r, "≤ 0.1×", r <= 0.1)
	// The clone runs the cloud stand-in's systemd and cloud-init: the
	// guest users have, whose cold start is what a resume saves.
	resume, err := measureResume(cowork, name(second), 2)
	if err != nil {
		return err
	}
	resume.rows(t, "the cloud stand-in")
	cloned, _, err := measureClone(cowork, name(second), 2)
	if err != nil {
		return err
	}
	cloneRow(t, cloned, resume.cold, "the cloud stand-in")
	if err := stopAll(); err != nil {
		return err
	}

	defer exec.Command(cowork, "delete", "--name", name(third), "--force").Run()
	if out, err := third.CombinedOutput(); err != nil {
		return fmt.Errorf("cowork init --no-start: %v\n%s", err, out)
	}
	out, err := exec.Command(cowork, "image", "ls", "--json").Output()
	if err != nil {
		return fmt.Errorf("cowork image ls: %w", err)
	}
	var disks []struct {
		Allocated int64    `json:"allocated"`
		Users     []string `json:"users"`
	}
	if err := json.Unmarshal(out, &disks); err != nil || len(disks) != 1 {
		return fmt.Errorf("cowork image ls: want one golden disk, got %s (%v)", strings.TrimSpace(string(out)), err)
	}
	p, err := instance.PathsFor(name(third))
	if err != nil {
		return err
	}
	clone := allocatedBytes(p.DiskFor(instance.DiskQcow2))
	if clone < 0 {
		clone = allocatedBytes(p.Disk()) // a reflink clone
	}
	share := float64(clone) / float64(disks[0].Allocated)
	mib := func(n int64) string { return fmt.Sprintf("%.2f MiB", float64(n)/(1<<20)) }
	t.add("disk space of a clone right after `init --no-start` ÷ its golden disk's", mib(clone), mib(disks[0].Allocated),
		share, "≤ 0.01×", share <= 0.01)
	return nil
}

// allocatedBytes is what the file at path takes on the host's disk; -1
// when it is not there.
func allocatedBytes(path string) int64 {
	var st syscall.Stat_t
	if syscall.Stat(filepath.Clean(path), &st) != nil {
		return -1
	}
	return st.Blocks * 512
}
