// Package status is `cowork status`.
package status

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/coworkhq/cowork"
	"github.com/coworkhq/cowork/cmd/cowork/cmdutil"
	"github.com/coworkhq/cowork/cmd/cowork/iostreams"
	"github.com/coworkhq/cowork/hostd/instance"
	"github.com/coworkhq/cowork/internal/termsafe"
	"github.com/coworkhq/cowork/units"
)

// Status is what `cowork status --json` prints.
type Status struct {
	Name          string `json:"name"`
	State         string `json:"state"`
	Ready         bool   `json:"ready"`
	HostdPid      int    `json:"hostd_pid,omitempty"`
	UptimeSeconds int64  `json:"uptime_seconds,omitempty"`
	CPUs          int    `json:"cpus"`
	MemoryBytes   int64  `json:"memory_bytes"`
	DiskBytes     int64  `json:"disk_bytes"`
	DiskUsedBytes int64  `json:"disk_used_bytes"`
	// Golden is the key of the golden disk the disk was cloned from;
	// DiskFormat qcow2 means it is an overlay that needs that disk.
	Golden     string `json:"golden,omitempty"`
	DiskFormat string `json:"disk_format"`
	Workspace  string `json:"workspace"`
	// ThrowawayOf is the parent of a throwaway run's clone (exec --rm,
	// ask --rm, a pool's), which the run deletes when it ends.
	ThrowawayOf string `json:"throwaway_of,omitempty"`
	// Mounts are the folders shared besides the workspace, as
	// HOST:GUEST:MODE (cowork mount ls).
	Mounts []string `json:"mounts,omitempty"`
	// Secrets are the host-held secrets, as NAME@HOST (cowork secret ls).
	Secrets []string `json:"secrets,omitempty"`
	// With is what init --with added to the guest's provisioning.
	With         []string `json:"with,omitempty"`
	GuestIP      string   `json:"guest_ip,omitempty"`
	AgentVersion string   `json:"agent_version,omitempty"`
	Backend      string   `json:"backend,omitempty"`
	Accelerator  string   `json:"accelerator,omitempty"`
	Arch         string   `json:"arch"`
	// Publish lists guest ports reachable on the host, as HOSTADDR->GUESTPORT.
	Publish []string `json:"publish,omitempty"`
	// AutoPublish says the guest's listening ports are followed (cowork
	// port publish --auto).
	AutoPublish bool `json:"auto_publish,omitempty"`
	// Error says why the VM stopped when nobody asked it to.
	Error string `json:"error,omitempty"`
	// Network sums the audit log since hostd started.
	Network *NetworkStats `json:"network,omitempty"`
	// HostdOpenFDs is how many files and sockets hostd holds open.
	HostdOpenFDs int `json:"hostd_open_fds,omitempty"`
	// Boot is where the guest's boot spent its time, in milliseconds.
	Boot *cowork.BootPhases `json:"boot,omitempty"`
	// Suspended is the guest `cowork suspend` saved, which the next start
	// resumes; state is then "suspended".
	Suspended *SavedState `json:"suspended,omitempty"`
	// Note reports something status noticed and fixed, like a dead hostd.
	Note string `json:"note,omitempty"`
	// Cluster says where the guest runs when not on this machine (init
	// --backend kubevirt); absent for a guest here. (Backend above is
	// the hypervisor a running hostd reports.)
	Cluster *Cluster `json:"cluster,omitempty"`
}

// NetworkStats is the guest's traffic since the instance started.
type NetworkStats struct {
	Flows      int64 `json:"flows"`
	Blocked    int64 `json:"blocked"`
	DNSQueries int64 `json:"dns_queries"`
	BytesOut   int64 `json:"bytes_out"`
	BytesIn    int64 `json:"bytes_in"`
	// ActiveFlows are open now; MaxFlows is the most the guest may have
	// open at once. RefusedFlows were refused by the limits, between
	// RefusedSince and LastRefused.
	ActiveFlows  int64      `json:"active_flows"`
	MaxFlows     int64      `json:"max_flows"`
	RefusedFlows int64      `json:"refused_flows"`
	RefusedSince *time.Time `json:"refused_since,omitempty"`
	LastRefused  *time.Time `json:"last_refused,omitempty"`
	// ServeFailures are the services of the guest's network that stopped
	// serving while it ran (the proxy, the relay, DNS...).
	ServeFailures []ServeFailure `json:"serve_failures,omitempty"`
	// Degraded, when set, says that a service stopped serving, or that the
	// guest is running into the limits now (a flow was refused in the
	// last few minutes, or all are taken).
	Degraded string `json:"degraded,omitempty"`
	// Learning says the network is in learn mode (cowork policy learn).
	Learning bool `json:"learning,omitempty"`
	// DroppedFrames are frames to the guest dropped because its NIC did
	// not drain them in time (a busy or stuck guest; TCP resends them).
	DroppedFrames int64 `json:"dropped_frames"`
	// AuditDown says why the guest's new traffic is refused: its audit
	// log cannot be written.
	AuditDown string `json:"audit_down,omitempty"`
}

// ServeFailure is a service of the guest's network that stopped serving.
type ServeFailure struct {
	Service string    `json:"service"`
	Error   string    `json:"error"`
	At      time.Time `json:"at"`
}

// degradedRecent is how long after its last refusal a limit still counts
// as being hit.
const degradedRecent = 5 * time.Minute

// networkFrom is hostd's network stats in status's terms, with the note
// on a degraded network; config is the instance's config file, where the
// limit can be raised.
func networkFrom(n *cowork.NetworkStats, now time.Time, config string) *NetworkStats {
	st := &NetworkStats{Flows: n.Flows, Blocked: n.Blocked, DNSQueries: n.DNSQueries, BytesOut: n.BytesOut, BytesIn: n.BytesIn,
		ActiveFlows: n.ActiveFlows, MaxFlows: n.MaxFlows, RefusedFlows: n.RefusedFlows, Learning: n.Learning,
		DroppedFrames: n.DroppedFrames, AuditDown: termsafe.Line(n.AuditDown)}
	var notes []string
	for _, f := range n.ServeFailures {
		sf := ServeFailure{Service: termsafe.Line(f.Service), Error: termsafe.Line(f.Error), At: f.At}
		st.ServeFailures = append(st.ServeFailures, sf)
		notes = append(notes, fmt.Sprintf("%s stopped serving at %s (%s); the guest goes without it until the instance restarts (`cowork stop`, then `cowork start`)",
			sf.Service, sf.At.Local().Format(time.TimeOnly), sf.Error))
	}
	if n.RefusedFlows > 0 && !n.LastRefused.IsZero() {
		since, last := n.FirstRefused, n.LastRefused
		st.RefusedSince, st.LastRefused = &since, &last
		if now.Sub(last) < degradedRecent || (n.MaxFlows > 0 && n.ActiveFlows >= n.MaxFlows) {
			notes = append(notes, fmt.Sprintf("the guest hit the limit of %d concurrent connections %d times since %s (last %s ago); "+
				"connections past it are refused, see `cowork proxy`; to allow more, raise network.max_flows in %s and restart",
				n.MaxFlows, n.RefusedFlows, since.Local().Format(time.TimeOnly), now.Sub(last).Round(time.Second), config))
		}
	}
	st.Degraded = strings.Join(notes, "; and ")
	return st
}

// Options is a parsed `cowork status` command line.
type Options struct {
	IO   *iostreams.IOStreams
	Name string
	JSON bool
}

// NewCmdStatus builds the command; name is the global --name. runF, when
// not nil, gets the options instead of running them (tests).
func NewCmdStatus(ios *iostreams.IOStreams, name *string, runF func(*Options) error) *cobra.Command {
	o := &Options{IO: ios}
	cmd := &cobra.Command{
		Use:     "status",
		Short:   "Show the sandbox VM's state",
		Long:    "Show the instance's state, resources, workspace, guest IP, agent version and hypervisor,\nand for a guest on a cluster (init --backend kubevirt) where it runs.",
		Example: "  cowork status\n  cowork status --json | jq -r .state",
		Args:    cmdutil.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			o.Name = *name
			if runF != nil {
				return runF(o)
			}
			return run(cmd.Context(), o)
		},
	}
	cmd.Flags().BoolVar(&o.JSON, "json", false, "print as JSON")
	return cmd
}

func run(ctx context.Context, o *Options) error {
	st, err := Get(ctx, o.Name)
	if err != nil && o.JSON {
		return printJSONError(o.IO, o.Name, err)
	}
	if err != nil {
		return err
	}
	if o.JSON {
		return printJSON(o.IO, st)
	}
	print(o.IO, st)
	return nil
}

// SavedState is a suspended instance's saved guest.
type SavedState struct {
	Saved time.Time `json:"saved"`
	Bytes int64     `json:"bytes"`
}

// Get asks hostd when it runs, and otherwise reads the instance's files,
// cleaning up after a hostd that died.
func Get(ctx context.Context, name string) (*Status, error) { return get(ctx, name, true) }

// Look is Get that changes nothing: a hostd that died is named in the
// note, its leftovers left for the next Get, start or stop to clean. It
// takes no lock, which a hostd starting that moment would find taken.
func Look(ctx context.Context, name string) (*Status, error) { return get(ctx, name, false) }

func get(ctx context.Context, name string, clean bool) (*Status, error) {
	inst, err := cowork.Open(name)
	if err != nil {
		return nil, err
	}
	cfg, paths := inst.Config, inst.Paths
	st := &Status{
		Name: name, State: "stopped", CPUs: cfg.CPUs, MemoryBytes: int64(cfg.Memory), DiskBytes: int64(cfg.Disk),
		Workspace: cfg.Workspace, Mounts: mountList(cfg.Mounts), Secrets: secretList(cfg.Secrets), With: cfg.With, Arch: cfg.Arch, DiskUsedBytes: allocated(cfg.DiskPath(paths)),
		Golden: cfg.Golden, DiskFormat: cfg.Format(), Cluster: clusterOf(cfg),
	}
	if t := cfg.Throwaway; t != nil {
		st.ThrowawayOf = t.Parent
	}
	for _, p := range cfg.Publish {
		st.Publish = append(st.Publish, p.String())
	}
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	r, err := inst.Status(ctx)
	switch {
	case errors.Is(err, cowork.ErrNotRunning):
		if b, err := os.ReadFile(paths.LastStop()); err == nil {
			st.Error = strings.TrimSpace(string(b))
		}
		switch {
		case !clean:
			if pid := instance.DeadPid(paths); pid != 0 {
				st.Note = deadHostd(cfg, pid)
			}
		case cfg.Remote():
			st.Note = stoppedOnCluster(cfg, inst.CleanStale())
		default:
			if pid := inst.CleanStale(); pid != 0 {
				st.Note = fmt.Sprintf("hostd (pid %d) died without stopping the VM; its leftovers were cleaned up. Start it again with `cowork start`", pid)
			}
		}
		if sv := inst.Saved(); sv != nil {
			st.State, st.Suspended = "suspended", &SavedState{Saved: sv.Saved, Bytes: sv.Bytes}
		}
		return st, nil
	case err != nil:
		st.State = "unknown"
		st.Note = fmt.Sprintf("hostd holds the instance but does not answer (%v); see %s", err, paths.HostdLog())
		return st, nil
	}
	st.State, st.Ready, st.HostdPid = r.State, r.Ready, r.HostdPID
	if !cfg.Remote() { // a cluster's guest shares no folder
		st.Note = cmdutil.WorkspaceGone(cfg, name)
	}
	if !r.Started.IsZero() {
		st.UptimeSeconds = int64(time.Since(r.Started).Seconds())
	}
	st.DiskUsedBytes, st.GuestIP, st.AgentVersion = r.DiskUsedBytes, r.GuestIP, r.AgentVersion
	st.Backend, st.Accelerator, st.Error = r.Backend, r.Accelerator, r.Error
	if n := r.Network; n != nil {
		st.Network = networkFrom(n, time.Now(), filepath.Join(paths.Dir(), "config.json"))
	}
	if r.Ports != nil { // the running network's: the config's and `port publish`'s
		st.Publish, st.AutoPublish = nil, r.AutoPublish
		for _, p := range r.Ports {
			st.Publish = append(st.Publish, p.String())
		}
	}
	if p := r.HostdProcess; p != nil && p.OpenFDs > 0 {
		st.HostdOpenFDs = p.OpenFDs
	}
	st.Boot = r.Boot
	if cfg.Remote() {
		runningOnCluster(st)
	}
	return st, nil
}

// deadHostd is Look's note of a hostd that died (pid), whose leftovers it
// does not clean.
func deadHostd(cfg *instance.Config, pid int) string {
	if cfg.Remote() {
		return fmt.Sprintf("hostd (pid %d) died; its VM in the cluster may still run: `%s` shows it", pid, cowork.ClusterVMCheck(cfg))
	}
	return fmt.Sprintf("hostd (pid %d) died without stopping the VM; `cowork status%s` cleans up after it, `cowork start%s` starts it again", pid, instance.NameFlag(cfg.Name), instance.NameFlag(cfg.Name))
}

// allocated is how much of a sparse file is really on disk.
func allocated(path string) int64 {
	var s syscall.Stat_t
	if syscall.Stat(path, &s) != nil {
		return 0
	}
	return s.Blocks * 512
}

// printJSON writes s as indented JSON whose text prints safely: what the
// guest said (the stop reason, the agent's version) may hold escapes.
func printJSON(ios *iostreams.IOStreams, s *Status) error {
	b, err := json.MarshalIndent(s, "", "  ")
	if err != nil {
		return err
	}
	_, err = ios.Out.Write(append(termsafe.JSON(b), '\n'))
	return err
}

// ErrorJSON is what `cowork status --json` prints when it has no status
// to give (no such instance, say): a script reading stdout gets JSON
// either way, and the exit code is not 0.
// Its state is "missing" when there is no such instance, else "unknown",
// so that `jq -r .state` reads the same field as on success.
type ErrorJSON struct {
	Name  string `json:"name"`
	State string `json:"state"`
	Error string `json:"error"`
}

// printJSONError writes err as an ErrorJSON and returns the error that
// ends the command with code 1 (its message also goes to stderr).
func printJSONError(ios *iostreams.IOStreams, name string, err error) error {
	e := ErrorJSON{Name: name, State: "unknown", Error: err.Error()}
	if errors.As(err, new(*instance.NotFoundError)) {
		e.State = "missing"
	}
	b, merr := json.MarshalIndent(e, "", "  ")
	if merr != nil {
		return err
	}
	if _, werr := ios.Out.Write(append(termsafe.JSON(b), '\n')); werr != nil {
		return werr
	}
	return err
}

// print shows s for a person. The stop reason quotes the guest's console,
// the agent version and notes come from the guest or through hostd: every
// string is printed through termsafe, so none can drive the terminal.
func print(ios *iostreams.IOStreams, st *Status) {
	s := *st
	for _, f := range []*string{&s.Name, &s.State, &s.Workspace, &s.GuestIP, &s.AgentVersion, &s.Backend, &s.Accelerator, &s.Arch, &s.Error, &s.Note} {
		*f = termsafe.Line(*f)
	}
	s.Publish, s.Mounts, s.Secrets, s.With = nil, nil, nil, nil
	for _, x := range st.Secrets {
		s.Secrets = append(s.Secrets, termsafe.Line(x))
	}
	for _, x := range st.With {
		s.With = append(s.With, termsafe.Line(x))
	}
	for _, p := range st.Publish {
		s.Publish = append(s.Publish, termsafe.Line(p))
	}
	for _, m := range st.Mounts {
		s.Mounts = append(s.Mounts, termsafe.Line(m))
	}
	w := tabwriter.NewWriter(ios.Out, 0, 0, 2, ' ', 0)
	state := s.State
	if s.State == "running" {
		if s.Ready {
			state += " (ready)"
		} else {
			state += " (booting)"
		}
	}
	if s.Cluster != nil && s.State == "stopped" {
		state = "stopped here" // the note says what of its VM there
	}
	if sv := s.Suspended; sv != nil {
		state += fmt.Sprintf(" (saved %s, %s; `cowork start` resumes it)", sv.Saved.Local().Format("2006-01-02 15:04"), units.Size(sv.Bytes))
	}
	fmt.Fprintf(w, "name:\t%s\n", s.Name)
	fmt.Fprintf(w, "state:\t%s\n", state)
	if s.HostdPid != 0 {
		fmt.Fprintf(w, "hostd pid:\t%d\n", s.HostdPid)
		fmt.Fprintf(w, "uptime:\t%s\n", time.Duration(s.UptimeSeconds)*time.Second)
	}
	fmt.Fprintf(w, "cpus:\t%d\n", s.CPUs)
	fmt.Fprintf(w, "memory:\t%s\n", units.Size(s.MemoryBytes))
	if k := s.Cluster; k != nil {
		fmt.Fprintf(w, "cluster:\t%s\n", clusterLine(k))
	}
	if s.ThrowawayOf != "" {
		fmt.Fprintf(w, "clone of:\t%s (throwaway: deleted once a run has used it)\n", termsafe.Line(s.ThrowawayOf))
	}
	if s.Cluster != nil && s.DiskUsedBytes == 0 {
		fmt.Fprintf(w, "disk:\t%s (a DataVolume in the cluster)\n", units.Size(s.DiskBytes))
	} else {
		fmt.Fprintf(w, "disk:\t%s used of %s%s\n", units.Size(s.DiskUsedBytes), units.Size(s.DiskBytes), goldenNote(s))
	}
	if s.Cluster != nil {
		fmt.Fprintf(w, "workspace:\tnot shared (the guest runs on a cluster)\n")
	} else {
		fmt.Fprintf(w, "workspace:\t%s\n", s.Workspace)
	}
	if len(s.Mounts) > 0 {
		fmt.Fprintf(w, "mounts:\t%s\n", strings.Join(s.Mounts, ", "))
	}
	if len(s.Secrets) > 0 {
		fmt.Fprintf(w, "secrets:\t%s\n", strings.Join(s.Secrets, ", "))
	}
	if len(s.With) > 0 {
		fmt.Fprintf(w, "with:\t%s\n", strings.Join(s.With, ", "))
	}
	if s.AutoPublish {
		s.Publish = append(s.Publish, "and what the guest listens on (--auto)")
	}
	if len(s.Publish) > 0 {
		fmt.Fprintf(w, "published:\t%s\n", strings.Join(s.Publish, ", "))
	}
	if s.GuestIP != "" {
		fmt.Fprintf(w, "guest ip:\t%s\n", s.GuestIP)
	}
	if s.AgentVersion != "" {
		fmt.Fprintf(w, "agent:\t%s\n", s.AgentVersion)
	}
	if s.Backend != "" {
		fmt.Fprintf(w, "backend:\t%s\n", backendLine(s))
	}
	if n := s.Network; n != nil {
		fmt.Fprintf(w, "network:\t%d flows (%d blocked), %d DNS queries, %s out, %s in; see `cowork proxy`\n",
			n.Flows, n.Blocked, n.DNSQueries, units.Size(n.BytesOut), units.Size(n.BytesIn))
		if n.MaxFlows > 0 {
			line := fmt.Sprintf("%d open, at most %d", n.ActiveFlows, n.MaxFlows)
			if n.RefusedFlows > 0 && n.LastRefused != nil {
				line += fmt.Sprintf("; %d refused at the limit, last at %s", n.RefusedFlows, n.LastRefused.Local().Format(time.TimeOnly))
			}
			fmt.Fprintf(w, "flows:\t%s\n", line)
		}
		if n.AuditDown != "" {
			fmt.Fprintf(w, "audit:\t%s; free space on the host's disk\n", strings.TrimPrefix(n.AuditDown, "audit: "))
		}
		if n.DroppedFrames > 0 {
			fmt.Fprintf(w, "frames:\t%d to the guest dropped: its network card did not take them in time (TCP sends them again)\n", n.DroppedFrames)
		}
		if n.Learning {
			fmt.Fprintf(w, "policy:\tlearning (cowork policy learn): what it does not list is let through and recorded\n")
		}
	}
	if s.Error != "" {
		fmt.Fprintf(w, "error:\t%s\n", s.Error)
	}
	w.Flush()
	if s.Network != nil && s.Network.Degraded != "" {
		fmt.Fprintln(ios.Out, "network: degraded: "+s.Network.Degraded)
	}
	if s.Note != "" {
		fmt.Fprintln(ios.ErrOut, "note:", s.Note)
	}
}

// backendLine is the hypervisor, its accelerator when it has one, and
// the guest's architecture: "qemu (kvm, amd64 guest)".
func backendLine(s Status) string {
	if s.Accelerator == "" {
		return fmt.Sprintf("%s (%s guest)", s.Backend, s.Arch)
	}
	return fmt.Sprintf("%s (%s, %s guest)", s.Backend, s.Accelerator, s.Arch)
}

// goldenNote says what golden disk the disk came from, and whether it
// needs it.
func goldenNote(s Status) string {
	if len(s.Golden) < 12 {
		return ""
	}
	if s.DiskFormat == "qcow2" {
		return " (an overlay on golden disk " + s.Golden[:12] + ")"
	}
	return " (cloned from golden disk " + s.Golden[:12] + ")"
}

// secretList is the secrets as status shows them, by name and host.
func secretList(secrets []instance.Secret) []string {
	var out []string
	for _, x := range secrets {
		out = append(out, x.Name+"@"+strings.TrimSuffix(x.Host, ":443"))
	}
	slices.Sort(out)
	return out
}

// mountList is the mounts as status shows them.
func mountList(mounts []instance.Mount) []string {
	var out []string
	for _, m := range mounts {
		out = append(out, m.String())
	}
	return out
}
