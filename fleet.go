package cowork

// ThrowawaySnapshot is the snapshot the throwaway runs of i clone when
// given name: name itself, else its pool's, else the one its disk sits
// on, else its newest, else BaseSnapshot taken now of the stopped
// instance. A fleet asks it once before its runs start, so that they all
// clone one snapshot rather than each racing to take the first, and each
// refusing alike. An instance on a cluster has no snapshots: its runs
// clone its disk, "", once it can be cloned.
func (i *Instance) ThrowawaySnapshot(name string, note func(string)) (string, error) {
	if i.Config.Remote() {
		return "", i.clusterClonable(name)
	}
	if name == "" {
		pool, err := i.PoolSettings()
		if err != nil {
			return "", err
		}
		name = pool.Snapshot
	}
	return i.throwawayBase(name, note)
}
