package instance

import (
	"path/filepath"

	"github.com/coworkhq/cowork/hostd/netstack/audit"
)

// Paths names the files in an instance directory.
type Paths string

// PathsFor returns the paths of the named instance.
func PathsFor(name string) (Paths, error) {
	d, err := Dir(name)
	return Paths(d), err
}

func (p Paths) Dir() string          { return string(p) }
func (p Paths) file(n string) string { return filepath.Join(string(p), n) }

func (p Paths) Config() string     { return p.file("config.json") }
func (p Paths) Disk() string       { return p.file("disk.raw") }
func (p Paths) CIData() string     { return p.file("cidata.iso") }
func (p Paths) Kernel() string     { return p.file("kernel") }
func (p Paths) Initrd() string     { return p.file("initrd") }
func (p Paths) EFIVars() string    { return p.file("efi-vars") }
func (p Paths) MachineID() string  { return p.file("machine-id") }
func (p Paths) HostdSock() string  { return p.file("hostd.sock") }
func (p Paths) AgentSock() string  { return p.file("agent.sock") }
func (p Paths) SerialLog() string  { return p.file("serial.log") }
func (p Paths) HostdLog() string   { return p.file("hostd.log") }
func (p Paths) NetworkLog() string { return p.file("network.jsonl") }
func (p Paths) PidFile() string    { return p.file("hostd.pid") }

// AuditKey and AuditHead are the network log's chain (hostd/netstack/
// audit): the key its records' MACs are made with, and the anchor that
// names its last record. Both are 0600 and never leave the host: whoever
// holds the key can rewrite the log unseen. A clone makes its own.
func (p Paths) AuditKey() string  { return p.file("audit.key") }
func (p Paths) AuditHead() string { return p.file("audit.head") }

// Audit is how the network log is opened and verified.
func (p Paths) Audit() audit.Options {
	return audit.Options{MaxSize: audit.DefaultMaxSize, Keep: audit.DefaultKeep, Key: p.AuditKey(), Head: p.AuditHead()}
}

// Usage holds what the instance's API sessions spent, by day and by
// session (hostd/netstack/budget), for `cowork usage` and the daily
// budget; UsageLock orders its writers (hostd, and its throwaway clones'
// hostds, which write their parent's).
func (p Paths) Usage() string     { return p.file("usage.json") }
func (p Paths) UsageLock() string { return p.file("usage.lock") }

// SecretsCA and SecretsCAKey are the instance's own certificate authority
// (internal/tlsca), which the guest trusts for the hosts of its secrets;
// the key, 0600, never leaves the host.
func (p Paths) SecretsCA() string    { return p.file("secrets-ca.pem") }
func (p Paths) SecretsCAKey() string { return p.file("secrets-ca.key") }

// DiskFor is the disk file of an instance whose disk has format
// (DiskRaw or DiskQcow2); Disk is the raw one.
func (p Paths) DiskFor(format string) string {
	if format == DiskQcow2 {
		return p.file("disk.qcow2")
	}
	return p.Disk()
}

// Capture records a golden-disk capture under way (image/golden), so that
// one cut short is finished or undone before the instance runs again.
func (p Paths) Capture() string { return p.file("capture.json") }

// Snapshots holds the instance's disk snapshots, one folder each
// (image/snapshot); SnapshotIntent records a snapshot being taken, so that
// one cut short is finished before the instance runs again.
func (p Paths) Snapshots() string      { return p.file("snapshots") }
func (p Paths) SnapshotIntent() string { return p.file("snapshot.json") }

// LastStop holds why the VM last stopped by itself, for `cowork status`
// once hostd is gone; the next start removes it.
func (p Paths) LastStop() string { return p.file("last-stop.txt") }
func (p Paths) LockFile() string { return p.file("hostd.lock") }

// Provisioned exists once the guest reported its provisioning complete:
// `cowork init` resumes an instance without it instead of refusing.
func (p Paths) Provisioned() string { return p.file("provisioned") }

// Suspend holds the guest `cowork suspend` saved, memory and devices, with
// its manifest (hostd/savestate); the next start resumes it. A folder
// without a manifest is a suspend cut short. SuspendRejected keeps the
// last state a start refused, for a look; SuspendRetired the one the last
// resume used, until it is removed.
func (p Paths) Suspend() string         { return p.file("suspend") }
func (p Paths) SuspendRejected() string { return p.file("suspend.rejected") }
func (p Paths) SuspendRetired() string  { return p.file("suspend.retired") }

// Pool holds the settings of the instance's pool of throwaway clones
// (how many, hot or warm, from which snapshot); PoolLock is held by the
// one process filling it, PoolLog is that process's log. Runs is the
// audit log of the throwaway runs made from the instance (`exec --rm`,
// `ask --rm`): one line per run, after the network records of its clone,
// appended under RunsLock.
func (p Paths) Pool() string     { return p.file("pool.json") }
func (p Paths) PoolLock() string { return p.file("pool.lock") }
func (p Paths) PoolLog() string  { return p.file("pool.log") }
func (p Paths) Runs() string     { return p.file("runs.jsonl") }
func (p Paths) RunsLock() string { return p.file("runs.lock") }

// Claim, in a throwaway clone's folder, names the process that took the
// clone for a run (or is making it for the pool): a clone without one is
// free for the next run.
func (p Paths) Claim() string { return p.file("claim") }

// Run is a directory for the running VM's sockets and helper pid files
// (QMP, the agent chardev, virtiofsd), emptied at every start.
func (p Paths) Run() string { return p.file("run") }
