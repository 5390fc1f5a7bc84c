package controlwire

import (
	"fmt"
	"time"
)

// StateStandby is Status.State while hostd holds a saved guest loaded
// and paused (`run --standby`) for CallWake.
const StateStandby = "standby"

// Status describes the instance and its VM, as hostd sees it. A time
// that did not happen is the zero time, left out of the JSON.
type Status struct {
	Name string `json:"name"`
	// State is starting, standby (a saved guest loaded and paused, for
	// CallWake to run), running, paused, suspending, stopping or stopped.
	State string `json:"state"`
	// Ready is true once the agent answers and the guest finished
	// provisioning: commands can run.
	Ready    bool `json:"ready"`
	HostdPID int  `json:"hostd_pid"`
	// Started is when the VM was started.
	Started     time.Time `json:"started,omitzero"`
	CPUs        int       `json:"cpus"`
	MemoryBytes int64     `json:"memory_bytes"`
	DiskBytes   int64     `json:"disk_bytes"`
	// DiskUsedBytes is what the (sparse) disk image takes on the host.
	DiskUsedBytes int64  `json:"disk_used_bytes"`
	Workspace     string `json:"workspace"`
	GuestIP       string `json:"guest_ip,omitempty"`
	AgentVersion  string `json:"agent_version,omitempty"`
	// Backend is the hypervisor ("qemu", "vz"); Accelerator its
	// accelerator ("kvm", "tcg", "hvf").
	Backend     string `json:"backend,omitempty"`
	Accelerator string `json:"accelerator,omitempty"`
	Arch        string `json:"arch"`
	// BootID is the guest's boot id, from its agent.
	BootID string `json:"boot_id,omitempty"`
	// Error says why the VM stopped when nobody asked it to. It quotes
	// QEMU's log: print it through termsafe.
	Error   string        `json:"error,omitempty"`
	Network *NetworkStats `json:"network,omitempty"`
	// Ports are the guest ports published on the host while the network
	// runs: the config's and those of CallPublish. Absent (null) when the
	// network is not up, or from a hostd older than the field.
	Ports []Port `json:"ports"`
	// AutoPublish says hostd follows the guest's listening sockets.
	AutoPublish bool `json:"auto_publish,omitempty"`
	// HostdProcess is hostd's own use of resources, to watch for leaks.
	HostdProcess *ProcessStats `json:"hostd_process,omitempty"`
	// Boot is where the guest's boot spent its time; nil until its agent
	// first answered.
	Boot *BootPhases `json:"boot,omitempty"`
}

// BootPhases is where the guest's last boot spent its time, in
// milliseconds. AgentAnsweredMs is hostd's own measure, from the VM's
// start; the others are the guest's claims, from its kernel's start,
// which hostd keeps only when they are in bounds (0: unknown or dropped).
type BootPhases struct {
	AgentAnsweredMs  int64 `json:"agent_answered_ms"`            // host: VM started → the agent's first answer
	UptimeMs         int64 `json:"uptime_ms,omitempty"`          // guest: kernel start → that answer
	UserspaceMs      int64 `json:"userspace_ms,omitempty"`       // guest: kernel start → user space (/init) started
	AgentStartedMs   int64 `json:"agent_started_ms,omitempty"`   // guest: kernel start → the agent's process started
	AgentListeningMs int64 `json:"agent_listening_ms,omitempty"` // guest: kernel start → the agent listening
}

// ProcessStats is a process's use of resources.
type ProcessStats struct {
	Goroutines int   `json:"goroutines"`
	OpenFDs    int   `json:"open_fds"`
	RSSBytes   int64 `json:"rss_bytes"`
}

// NetworkStats is what the audit log recorded since hostd started, and
// the state of the guest's flow limits.
type NetworkStats struct {
	Flows      int64 `json:"flows"`
	Blocked    int64 `json:"blocked"`
	DNSQueries int64 `json:"dns_queries"`
	BytesOut   int64 `json:"bytes_out"`
	BytesIn    int64 `json:"bytes_in"`
	// ActiveFlows are the guest's flows open now; MaxFlows the most it may
	// have open at once (network.max_flows, fitted to hostd's open-file
	// limit).
	ActiveFlows int64 `json:"active_flows"`
	MaxFlows    int64 `json:"max_flows"`
	// RefusedFlows were refused by the limits since hostd started, the
	// first at FirstRefused, the last at LastRefused.
	RefusedFlows int64     `json:"refused_flows"`
	FirstRefused time.Time `json:"first_refused,omitzero"`
	LastRefused  time.Time `json:"last_refused,omitzero"`
	// ServeFailures are the services of the guest's network (the proxy,
	// the relay, DNS, DHCP, the guest's link, a published port) whose
	// serve loop ended while the network ran; none while all serve.
	ServeFailures []ServeFailure `json:"serve_failures,omitempty"`
	// Learning says the network is in learn mode (CallLearn): what the
	// policy does not list is let through, and audited as learned.
	Learning bool `json:"learning,omitempty"`
	// DroppedFrames are frames to the guest dropped since hostd started
	// because its NIC did not drain the socket in time (on macOS a full
	// socket answers ENOBUFS; netstack retries, bounded, then drops).
	DroppedFrames int64 `json:"dropped_frames"`
	// AuditDown says why the guest's new traffic is refused: the audit
	// log cannot be written (a full disk); "" while it can.
	AuditDown string `json:"audit_down,omitempty"`
}

// ServeFailure is a service that stopped serving, and why.
type ServeFailure struct {
	Service string    `json:"service"`
	Error   string    `json:"error"`
	At      time.Time `json:"at"`
}

// Event is a step of the boot. Its texts may quote the guest: hostd makes
// them printable (termsafe) and cuts them to 8 KiB.
type Event struct {
	At    time.Time `json:"at"`
	Phase Phase     `json:"phase"`
	// Message is a human-readable line about this phase.
	Message string `json:"message"`
	// Error is set on PhaseFailed (and PhaseStopped, when the VM stopped
	// on its own): what went wrong.
	Error string `json:"error,omitempty"`
}

// Phase is how far a boot got. Phases up to PhaseReady come in this
// order, so a follower can keep the furthest with max; PhaseFailed and
// PhaseStopped end a boot. On the wire a phase is its name, as String
// gives it; a name this side does not know reads as PhaseUnspecified.
type Phase int

// The phases.
const (
	PhaseUnspecified Phase = iota
	// PhaseVMStarted: hostd started the hypervisor.
	PhaseVMStarted
	// PhaseKernel: the guest kernel printed its first line.
	PhaseKernel
	// PhaseAgentConnected: the guest agent answered.
	PhaseAgentConnected
	// PhaseProvisioning: the guest is still provisioning (cloud-init).
	PhaseProvisioning
	// PhaseReady: everything is up, commands can run.
	PhaseReady
	// PhaseFailed: the boot failed; the VM is stopped, unless its
	// provisioning failed (the guest is then kept up for a look).
	PhaseFailed
	// PhaseStopped: the VM stopped.
	PhaseStopped
	// PhaseNote is a remark outside the order of the boot: a saved state
	// that could not be resumed (Error says why), so the guest boots cold.
	PhaseNote
	// PhaseSuspending: hostd is saving the guest (CallSuspend).
	PhaseSuspending
	// PhaseSuspended: the guest is saved and the VM stopped; hostd exits.
	PhaseSuspended
)

var phaseNames = [...]string{"unspecified", "vm_started", "kernel", "agent_connected", "provisioning", "ready", "failed", "stopped", "note", "suspending", "suspended"}

// String is the phase's name on the wire.
func (p Phase) String() string {
	if p >= 0 && int(p) < len(phaseNames) {
		return phaseNames[p]
	}
	return fmt.Sprintf("phase(%d)", int(p))
}

// MarshalText writes the phase's name.
func (p Phase) MarshalText() ([]byte, error) { return []byte(p.String()), nil }

// UnmarshalText reads a phase's name; one from a newer hostd that this
// side does not know is PhaseUnspecified, not an error that would end
// the stream it came in.
func (p *Phase) UnmarshalText(b []byte) error {
	*p = PhaseUnspecified
	for i, name := range phaseNames {
		if string(b) == name {
			*p = Phase(i)
		}
	}
	return nil
}
