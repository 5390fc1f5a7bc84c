package cowork

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/coworkhq/cowork/hostd/instance"
)

// A throwaway run of an instance on a cluster happens in a new instance
// there, made for the run: a copy of the parent's settings whose root
// disk the cluster (CDI) clones from the parent's DataVolume
// (Cluster.CloneOf). The parent was provisioned once, at its first start:
// what cloud-init installed is on its disk, so its clones boot ready, a
// golden image the cluster's way. There is no pool, and no snapshot to
// choose: the disk is cloned as it is. The cluster clones a disk only
// while no VM uses it, so the parent must be stopped; its daemon
// (cowork-hostd-kubevirt) checks that again in the cluster before it
// makes the clone's VM, where a parent running elsewhere shows.

// clusterThrowaway makes and starts a clone of the cluster instance i for
// one run.
func (i *Instance) clusterThrowaway(ctx context.Context, o ThrowawayOptions) (*Throwaway, error) {
	if err := i.clusterClonable(o.Snapshot); err != nil {
		return nil, err
	}
	began := time.Now()
	t, err := i.makeClusterThrowaway()
	if err != nil {
		return nil, err
	}
	t.began = began
	if err := t.Instance.Start(ctx, o.Progress); err != nil && !errors.Is(err, ErrAlreadyRunning) {
		return nil, t.abandon(ctx, err)
	}
	return t, nil
}

// clusterClonable says why the cluster instance i cannot have its disk
// cloned for a throwaway run now (from snapshot, which it has none of),
// or nil.
func (i *Instance) clusterClonable(snapshot string) error {
	if snapshot != "" {
		return fmt.Errorf("instance %s runs on a cluster, where it has no snapshots: its throwaway runs clone its disk as it is; drop --snapshot %s", i.Name, snapshot)
	}
	if i.Running() {
		return fmt.Errorf("stop %s first (`cowork stop%s`): the cluster clones its disk only while no VM uses it", i.Name, instance.NameFlag(i.Name))
	}
	if !i.Provisioned() {
		return fmt.Errorf("%s has not finished its init, and its disk is what throwaway runs clone: finish it with `cowork init%s`, stop it, then run again", i.Name, instance.NameFlag(i.Name))
	}
	// Without its daemon no clone can start, nor its objects be deleted:
	// said before a clone is made.
	_, err := kubevirtHostd.find()
	return err
}

// makeClusterThrowaway writes a new kubevirt instance whose disk is a
// clone of i's, claimed for a run (its claim taken in its folder before
// its config is there, as makeThrowaway's). Its name is i's cut to fit
// the cluster's names, with the run's id.
func (i *Instance) makeClusterThrowaway() (*Throwaway, error) {
	now := time.Now().UTC()
	k := *i.Config.Cluster
	k.CloneOf = i.Name
	var err error
	for try := 0; try < 3; try++ {
		name, id := throwawayName(i.Name, maxClusterCloneName)
		c := *i.Config
		c.Name, c.Created, c.Cluster = name, now, &k
		// Its own cloud-init instance, as a local clone's: the guest
		// makes itself a new machine-id and ssh host keys.
		c.InstanceID = fmt.Sprintf("cowork-%s-%d", name, now.Unix())
		c.MAC = "" // its own, from its name
		c.Throwaway = &instance.Throwaway{Parent: i.Name, Made: now, Settings: i.Config.SettingsDigest()}
		if err = c.Validate(0); err != nil {
			return nil, fmt.Errorf("a throwaway clone of %s: %w", i.Name, err)
		}
		var lock *instance.Lock
		onDir := func(dir string) (err error) {
			lock, err = claimIn(instance.Paths(dir), true)
			return err
		}
		var inst *Instance
		inst, err = create(context.Background(), &c, instance.Sources{}, nil, onDir)
		if err == nil {
			return &Throwaway{Instance: inst, Parent: i, ID: id, Ready: ReadyCold, claim: lock}, nil
		}
		if lock != nil {
			lock.Release()
		}
		if !errors.As(err, new(*instance.ExistsError)) {
			break
		}
	}
	return nil, fmt.Errorf("make a throwaway clone of %s: %w", i.Name, err)
}
