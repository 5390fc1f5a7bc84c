package initcmd

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/coworkhq/cowork"
	"github.com/coworkhq/cowork/hostd/instance"
)

// resume goes on with an init that stopped after the instance was created
// but before its guest reported itself provisioned (interrupted, timed out,
// or failed): it finishes what Create left and starts the instance, whose
// guest runs its provisioning at every boot until done, and follows it.
// The saved settings win. A flag given now that contradicts them is
// refused rather than ignored, so nobody believes that a --cpus took
// effect; the same command line run again resumes.
func resume(ctx context.Context, o *Options, saved, asked *instance.Config, src instance.Sources, began time.Time) error {
	inst, err := cowork.Open(saved.Name)
	if err != nil {
		return err
	}
	if inst.Provisioned() {
		return &instance.ExistsError{Name: saved.Name}
	}
	if diff := conflicts(saved, asked, src, o.Changed); len(diff) > 0 {
		flag := instance.NameFlag(saved.Name)
		return fmt.Errorf("instance %s is left from an interrupted init whose settings differ in %s; run `cowork init%s` without them to resume it, or remove it with `cowork delete%s` and init again",
			saved.Name, strings.Join(diff, ", "), flag, flag)
	}
	fmt.Fprintf(o.IO.ErrOut, "Resuming the interrupted init of %s (%d CPUs, %s memory, %s disk, workspace %s)\n",
		saved.Name, saved.CPUs, saved.Memory, saved.Disk, saved.Workspace)
	if err := inst.Resume(); err != nil {
		return err
	}
	// No golden disk is kept from a resumed init: the instance may have
	// been used since its provisioning stopped (a failed one is kept up
	// for a look inside), and a golden disk must hold what provisioning
	// made and nothing else.
	return o.startCreated(ctx, saved.Name, began, false)
}

// conflicts names the flags given (changed reports which) whose values
// differ from the saved instance's. A downloaded --image is not compared:
// its local copy's name depends on the download.
func conflicts(saved, asked *instance.Config, src instance.Sources, changed func(string) bool) []string {
	if changed == nil {
		return nil
	}
	differs := map[string]bool{
		"cpus":               saved.CPUs != asked.CPUs,
		"memory":             saved.Memory != asked.Memory,
		"disk":               saved.Disk != asked.Disk,
		"workspace":          saved.Workspace != asked.Workspace,
		"arch":               saved.Arch != asked.Arch,
		"kernel":             saved.Boot != asked.Boot,
		"cmdline":            saved.Cmdline != asked.Cmdline,
		"publish":            !slices.Equal(saved.Publish, asked.Publish),
		"mount":              !slices.Equal(saved.Mounts, asked.Mounts),
		"ssh-agent":          saved.SSHAgent != asked.SSHAgent,
		"network-mode":       saved.Network.Mode != asked.Network.Mode,
		"allow":              !slices.Equal(saved.Network.Allow, asked.Network.Allow),
		"deny":               !slices.Equal(saved.Network.Deny, asked.Network.Deny),
		"allow-host-port":    !slices.Equal(saved.Network.HostPorts, asked.Network.HostPorts),
		"upstream-proxy":     saved.Network.Upstream != asked.Network.Upstream,
		"max-flows":          saved.Network.MaxFlows != asked.Network.MaxFlows,
		"provision-packages": !slices.Equal(provision(saved).Packages, provision(asked).Packages),
		"provision-cmd":      !slices.Equal(provision(saved).Commands, provision(asked).Commands),
		"with":               !slices.Equal(saved.With, asked.With),
		"image":              (src.Image != "" && !isURL(src.Image) && src.Image != saved.Image) || (asked.Remote() && cluster(saved).Image != cluster(asked).Image),
		"backend":            saved.Backend != asked.Backend,
		"context":            cluster(saved).Context != cluster(asked).Context,
		"namespace":          cluster(saved).Namespace != cluster(asked).Namespace,
	}
	var diff []string
	for flag, d := range differs {
		if d && changed(flag) {
			diff = append(diff, "--"+flag)
		}
	}
	slices.Sort(diff)
	return diff
}

func provision(c *instance.Config) instance.Provision {
	if c.Provision == nil {
		return instance.Provision{}
	}
	return *c.Provision
}
