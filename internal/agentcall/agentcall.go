// Package agentcall is the protocol of hostd's calls to the guest agent
// that are not execs: Info, SetTime, Shutdown, Provisioning, ShareRelease,
// ShareMount, Personalize and the like. It
// replaced a gRPC service so that neither the agent nor hostd links gRPC
// or protobuf: the agent's start-up under emulation is part of every boot,
// and these four small calls paid for HTTP/2 and a protobuf runtime.
//
// A call has a connection (a channel to the agent) of its own:
//
//   - the host sends Preface, then one Request as one line of JSON;
//   - the agent answers Reply lines and closes the connection. Every call
//     but Provisioning answers one line. Provisioning answers a line
//     per status: at once, when the status changes, and again every
//     ProvisioningHeartbeat while it does not, so that the host can tell a
//     dead channel from a quiet guest; it ends after the first status that
//     is not running. A refused call answers one line with Error and Kind
//     (KindUnimplemented for a method this agent does not know).
//
// For example:
//
//	→ cowork-call/1
//	→ {"method":"info"}
//	← {"info":{"version":"0.1.0","boot_id":"...","uptime_ms":5120,...}}
//
// Every line is at most MaxLine bytes, newline included; each end refuses
// a longer one. Both binaries import this package, which imports only the
// standard library, so that the two ends built from one commit agree by
// construction. The host reads the agent's answers as hostile: it bounds
// every read and checks every value (hostd/agentrpc).
package agentcall

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"time"
)

// Preface opens a call connection. It is as long as execwire.Preface and
// agentwire.SourcePreface, so that the agent's listener tells the kinds of
// channel apart by reading one fixed-size head.
const Preface = "cowork-call/1\n"

// MaxLine bounds every line either end reads, its newline included.
const MaxLine = 64 << 10

// RequestTimeout is how long the agent waits for the request line after
// the preface.
const RequestTimeout = 10 * time.Second

// ProvisioningHeartbeat is how often the agent repeats an unchanged
// provisioning status. The host gives up on a provisioning connection
// that stays silent for several of these.
const ProvisioningHeartbeat = 15 * time.Second

// Method names a call.
type Method string

// The calls.
const (
	// MethodInfo answers Reply.Info.
	MethodInfo Method = "info"
	// MethodSetTime (Request.UnixNano) sets the guest's wall clock and
	// answers Reply.SetTime.
	MethodSetTime Method = "set_time"
	// MethodShutdown answers Reply.Shutdown, then syncs the disks and
	// powers the guest off.
	MethodShutdown Method = "shutdown"
	// MethodProvisioning answers Reply.Provisioning lines (see the
	// package's doc).
	MethodProvisioning Method = "provisioning"
	// MethodShareRelease (Request.Path, Request.Force) lets go of the
	// share mounted at Path so that the guest can be saved: QEMU 7.2
	// cannot save a guest with a virtiofs device attached, and the device
	// can only go once nothing in the guest mounts it. It answers
	// Reply.ShareRelease: the processes that use the share and, unless
	// some do and Force is false, unmounts it (lazily with Force).
	MethodShareRelease Method = "share_release"
	// MethodShareMount (Request.Tag, Request.Path, Request.ReadOnly)
	// mounts the virtiofs share Tag at Path (after a resume, or a mount
	// besides the workspace at boot), waiting up to ShareMountWait
	// for a device that was just plugged in to show its tag. It answers
	// Reply.ShareMount.
	MethodShareMount Method = "share_mount"
	// MethodShareEject hands every virtiofs device the guest has
	// unmounted back to the host at once (Reply.ShareEject): the agent
	// takes the device's PCIe slot from the kernel's hotplug driver
	// (pciehp, whose unplug waits out an attention button's 5 s and a
	// power-off's 1 s), removes the device and powers its slot off, which
	// QEMU takes as the device's release, then gives the empty slot back
	// to pciehp, which plugs the next device in as before. It refuses
	// while a virtiofs share is still mounted.
	MethodShareEject Method = "share_eject"
	// MethodPersonalize (Request.Seed, Request.Hostname) makes a guest
	// resumed from another instance's saved memory (a fork) its own: it
	// mixes Seed into the kernel's random pool and reseeds it, so that
	// two forks do not draw the same numbers, writes a new machine-id,
	// and sets the hostname. It answers Reply.Personalize.
	MethodPersonalize Method = "personalize"
	// MethodListeners lists the guest's listening TCP sockets and bound
	// UDP sockets, from /proc/net (Reply.Listeners), for a host that
	// follows them (cowork port publish --auto). At most MaxListeners.
	MethodListeners Method = "listeners"
	// MethodSSHAgent (Request.Addr) has the agent lend the guest the
	// host's SSH agent: it listens on a unix socket in the guest, forwards
	// each connection to Addr (the gateway's port, where hostd serves the
	// host's agent), and gives every exec SSH_AUTH_SOCK pointing at it;
	// an empty Addr stops that. It answers Reply.SSHAgent.
	MethodSSHAgent Method = "ssh_agent"
	// MethodSecrets (Request.Env, Request.CA) gives the guest the
	// placeholders of the host-held secrets: every exec from then on gets
	// Env's variables it does not set itself, and the guest trusts CA
	// (PEM), the instance's own authority, which hostd's interception of
	// the secrets' hosts is signed by. An empty Env and CA take them
	// back (the CA stays trusted: it vouches for nothing without hostd).
	// It answers Reply.Secrets.
	MethodSecrets Method = "secrets"
	// MethodStartUnits (Request.Units) starts systemd units and answers
	// Reply.StartUnits once they are up (systemctl start waits for them),
	// or with an error when one failed. A unit already active is a
	// success at once. hostd asks for what `init --with` installed
	// (docker.service) before it calls the instance ready, as Lima's
	// readiness probes do: it starts with the guest and takes long under
	// emulation. The call ends when the host hangs up.
	MethodStartUnits Method = "start_units"
	// MethodSocketOwners (Request.Sockets) names the guest process that
	// holds each socket asked about, for the audit log's provenance of a
	// flow (Reply.SocketOwners). The host asks in batches of at most
	// MaxSocketQueries; the answer is the guest's claim, and the host
	// keeps only answers to what it asked.
	MethodSocketOwners Method = "socket_owners"
)

// Bounds of MethodSocketOwners: a batch's size, and the command line and
// command name of each owner, in bytes (the agent cuts longer ones, at a
// character's start). A full batch of full owners fits within MaxLine.
const (
	MaxSocketQueries = 128
	MaxOwnerCmd      = 128
	MaxOwnerComm     = 16
)

// Socket names one guest socket by its flow as the guest sees it: Proto
// "tcp" or "udp", the guest's own port, and the peer's ip:port.
type Socket struct {
	Proto string `json:"proto"`
	Port  int    `json:"port"`
	Peer  string `json:"peer"`
}

// SocketOwnersReply answers each Socket asked about that the agent found
// a process for; the others are left out.
type SocketOwnersReply struct {
	Owners []SocketOwner `json:"owners"`
}

// SocketOwner is the process that holds a socket: its pid, the uid the
// socket belongs to, the exec it belongs to (the COWORK_EXEC of its
// environment, "" for a process no exec started), its command name
// (/proc/PID/comm) and command line (arguments joined by spaces, bytes
// that are not printable as '?').
type SocketOwner struct {
	Socket
	PID  int    `json:"pid"`
	UID  int64  `json:"uid"`
	Exec string `json:"exec,omitempty"`
	Comm string `json:"comm,omitempty"`
	Cmd  string `json:"cmd,omitempty"`
}

// MaxUnits is the most units one start_units call names.
const MaxUnits = 8

// StartUnitsReply says the units are active.
type StartUnitsReply struct{}

// Bounds of MethodSecrets' request: a variable per secret and a few for
// the tools that use them, all within one MaxLine.
const (
	MaxSecretEnv    = 256
	MaxSecretEnvLen = 1 << 10
	MaxSecretCA     = 8 << 10
)

// SecretsReply says where the guest keeps the CA ("" when it could not
// add it to its trust store: the note says why).
type SecretsReply struct {
	CAFile string `json:"ca_file"`
	Note   string `json:"note,omitempty"`
}

// SSHAgentReply is where the guest's SSH_AUTH_SOCK is ("" when stopped).
type SSHAgentReply struct {
	Socket string `json:"socket"`
}

// MaxListeners bounds a listeners reply.
const MaxListeners = 512

// ListenersReply is the guest's listening sockets, one per protocol,
// address and port.
type ListenersReply struct {
	Ports []Listener `json:"ports"`
}

// Listener is a socket waiting for peers: Proto "tcp" or "udp", the
// local address it is bound to (0.0.0.0 or :: for every address) and its
// port.
type Listener struct {
	Proto string `json:"proto"`
	Addr  string `json:"addr"`
	Port  int    `json:"port"`
}

// SeedSize is the size of Request.Seed.
const SeedSize = 64

// MaxShareUsers bounds ShareReleaseReply.Users; More counts the rest.
const MaxShareUsers = 16

// ShareMountWait is how long the agent retries a share mount whose device
// is not there yet. A host waits for the answer somewhat longer.
const ShareMountWait = 30 * time.Second

// Kinds of a refused call (Reply.Kind).
const (
	KindUnimplemented = "unimplemented"    // the agent does not know the method
	KindInvalid       = "invalid_argument" // a bad request: the message says what
	KindFailed        = "failed"           // the agent could not do it
)

// Request is the one line the host sends after the preface.
type Request struct {
	Method Method `json:"method"`
	// UnixNano is the host's wall clock for MethodSetTime, nanoseconds
	// since the Unix epoch.
	UnixNano int64 `json:"unix_nano,omitempty"`
	// Path is the share's mount point in the guest, absolute and clean,
	// for MethodShareRelease and MethodShareMount.
	Path string `json:"path,omitempty"`
	// Force has MethodShareRelease unmount the share even while processes
	// use it: they lose it.
	Force bool `json:"force,omitempty"`
	// Tag is the virtiofs tag MethodShareMount mounts, read-only when
	// ReadOnly (the host serves such a share read-only anyway: this only
	// spares the guest's programs errors they did not expect).
	Tag      string `json:"tag,omitempty"`
	ReadOnly bool   `json:"read_only,omitempty"`
	// Seed is SeedSize bytes from the host's random source, and Hostname
	// the guest's new name, for MethodPersonalize.
	Seed     []byte `json:"seed,omitempty"`
	Hostname string `json:"hostname,omitempty"`
	// Addr is MethodSSHAgent's IP:port.
	Addr string `json:"addr,omitempty"`
	// Env and CA are MethodSecrets'.
	Env []string `json:"env,omitempty"`
	CA  string   `json:"ca,omitempty"`
	// Units are MethodStartUnits' systemd unit names.
	Units []string `json:"units,omitempty"`
	// Sockets are MethodSocketOwners', at most MaxSocketQueries.
	Sockets []Socket `json:"sockets,omitempty"`
}

// Reply is one line the agent sends: the member of its method, or Error
// and Kind.
type Reply struct {
	Info         *Info               `json:"info,omitempty"`
	SetTime      *SetTimeReply       `json:"set_time,omitempty"`
	Shutdown     *ShutdownReply      `json:"shutdown,omitempty"`
	Provisioning *ProvisioningStatus `json:"provisioning,omitempty"`
	ShareRelease *ShareReleaseReply  `json:"share_release,omitempty"`
	ShareMount   *ShareMountReply    `json:"share_mount,omitempty"`
	ShareEject   *ShareEjectReply    `json:"share_eject,omitempty"`
	Personalize  *PersonalizeReply   `json:"personalize,omitempty"`
	Listeners    *ListenersReply     `json:"listeners,omitempty"`
	SSHAgent     *SSHAgentReply      `json:"ssh_agent,omitempty"`
	Secrets      *SecretsReply       `json:"secrets,omitempty"`
	StartUnits   *StartUnitsReply    `json:"start_units,omitempty"`
	SocketOwners *SocketOwnersReply  `json:"socket_owners,omitempty"`
	Error        string              `json:"error,omitempty"`
	Kind         string              `json:"kind,omitempty"`
}

// Info is who the agent is and how the guest is doing.
type Info struct {
	// Version is the agent's; the same string as the host build that
	// embedded it.
	Version string `json:"version"`
	// BootID is /proc/sys/kernel/random/boot_id: it changes on every boot.
	BootID string `json:"boot_id"`
	// UptimeMs is the time since the guest kernel booted.
	UptimeMs int64  `json:"uptime_ms"`
	Hostname string `json:"hostname"`
	// Kernel is the kernel release (uname -r).
	Kernel string `json:"kernel"`
	// Arch is GOARCH of the agent binary: arm64 or amd64.
	Arch string `json:"arch"`
	// Provisioned is true once the provisioning marker exists.
	Provisioned bool `json:"provisioned"`
	// DefaultUser is the user an exec runs as when it names none.
	DefaultUser string `json:"default_user"`
	// Process is the agent process itself, to watch for leaks.
	Process ProcessStats `json:"process"`
	// TimeUnixNano is the guest's wall clock when it answered: hostd
	// corrects a guest clock that drifted from the host's.
	TimeUnixNano int64 `json:"time_unix_nano"`
	// When the guest's boot reached these points, in milliseconds of
	// CLOCK_BOOTTIME (the clock of /proc/uptime, from the kernel's start),
	// as the guest reads them itself; 0 when it could not. The host takes
	// them as claims and drops what is out of bounds.
	//
	// InitStartedMs is PID 1's start (/proc/1/stat starttime): the kernel
	// makes PID 1 in its first moments and runs its own initialisation in
	// it before it starts user space (UserspaceStartedMs, from the
	// kernel's log line "Run ... as init process"). AgentStartedMs is the
	// agent process's start, AgentListeningMs when it began listening.
	InitStartedMs      int64 `json:"init_started_ms"`
	UserspaceStartedMs int64 `json:"userspace_started_ms"`
	AgentStartedMs     int64 `json:"agent_started_ms"`
	AgentListeningMs   int64 `json:"agent_listening_ms"`
}

// ProcessStats is a process's use of resources, for leak checks and
// diagnostics.
type ProcessStats struct {
	Goroutines int32 `json:"goroutines"`
	OpenFDs    int32 `json:"open_fds"`
	RSSBytes   int64 `json:"rss_bytes"`
}

// SetTimeReply is how far the guest clock was off before it was set
// (guest minus host), in nanoseconds.
type SetTimeReply struct {
	SkewNano int64 `json:"skew_nano"`
}

// ShutdownReply says the guest is powering off.
type ShutdownReply struct{}

// ShareReleaseReply is what a share release found and did.
type ShareReleaseReply struct {
	// Users are processes, other than the agent, whose working directory,
	// root, executable, open files or mapped files are on the share: at
	// most MaxShareUsers of them.
	Users []ShareUser `json:"users,omitempty"`
	// More counts the users that did not fit in Users.
	More int `json:"more,omitempty"`
	// Unmounted: the share is no longer mounted at the path. It is false
	// only when there are users and the release was not forced; nothing
	// was done then.
	Unmounted bool `json:"unmounted,omitempty"`
	// NotMounted: nothing was mounted at the path to begin with (a
	// release repeated, or a guest that never mounted the share).
	NotMounted bool `json:"not_mounted,omitempty"`
}

// ShareUser is a process that uses the share: its pid and its command
// name (/proc/PID/comm).
type ShareUser struct {
	PID  int    `json:"pid"`
	Comm string `json:"comm"`
}

// ShareMountReply says the share is mounted.
type ShareMountReply struct{}

// ShareEjectReply counts the devices the guest ejected.
type ShareEjectReply struct {
	Ejected int `json:"ejected"`
}

// PersonalizeReply is the guest's new machine-id (32 hex digits).
type PersonalizeReply struct {
	MachineID string `json:"machine_id"`
}

// State is where the guest's provisioning is.
type State string

// The states.
const (
	// StateRunning: still at work, cloud-init or the provisioning unit runs.
	StateRunning State = "running"
	// StateProvisioned: the provisioning marker exists.
	StateProvisioned State = "provisioned"
	// StateFailed: the provisioning unit failed.
	StateFailed State = "failed"
	// StateFinishedUnprovisioned: cloud-init finished (boot-finished
	// exists) and the marker does not: provisioning ended without
	// completing.
	StateFinishedUnprovisioned State = "finished_unprovisioned"
)

// Known reports whether s is one of the states.
func (s State) Known() bool {
	switch s {
	case StateRunning, StateProvisioned, StateFailed, StateFinishedUnprovisioned:
		return true
	}
	return false
}

// ProvisioningStatus is one look at the guest's provisioning. Every
// string is one line, short, for a progress view; the host bounds and
// sanitizes them all the same.
type ProvisioningStatus struct {
	State State `json:"state"`
	// Step is what the provisioning script wrote last (e.g. "installing
	// packages").
	Step string `json:"step,omitempty"`
	// Stage is cloud-init's current stage from /run/cloud-init/status.json
	// (e.g. "modules-config"), empty when it runs none.
	Stage string `json:"stage,omitempty"`
	// LastLine is the last line of output of the provisioning unit (or of
	// cloud-init).
	LastLine string `json:"last_line,omitempty"`
}

// ErrLineTooLong is a line over MaxLine.
var ErrLineTooLong = fmt.Errorf("a line over %d bytes", MaxLine)

// AppendLine appends v as one line of JSON to b, refusing one over
// MaxLine.
func AppendLine(b []byte, v any) ([]byte, error) {
	p, err := json.Marshal(v)
	if err != nil {
		return b, err
	}
	if len(p)+1 > MaxLine {
		return b, ErrLineTooLong
	}
	return append(append(b, p...), '\n'), nil
}

// LineReader reads lines of JSON, each bounded by MaxLine.
type LineReader struct {
	br *bufio.Reader
}

// NewLineReader returns a LineReader of r.
func NewLineReader(r io.Reader) *LineReader {
	return &LineReader{br: bufio.NewReaderSize(r, MaxLine)}
}

// Read reads the next line into v. A stream that ends between lines is
// io.EOF; one that ends inside a line is io.ErrUnexpectedEOF; a line
// over MaxLine is ErrLineTooLong, and one that is not a single JSON
// value for v a *BadLineError. The stream cannot be read past any
// of these.
func (r *LineReader) Read(v any) error {
	line, err := r.br.ReadSlice('\n')
	switch {
	case errors.Is(err, bufio.ErrBufferFull):
		return ErrLineTooLong
	case err == io.EOF && len(line) > 0:
		return io.ErrUnexpectedEOF
	case err != nil:
		return err
	}
	if err := json.Unmarshal(line, v); err != nil {
		return &BadLineError{err: err}
	}
	return nil
}

// BadLineError is a line that is not one JSON value of the type expected.
type BadLineError struct{ err error }

func (e *BadLineError) Error() string {
	return "a line that is not the JSON expected: " + e.err.Error()
}
func (e *BadLineError) Unwrap() error { return e.err }
