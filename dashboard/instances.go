package dashboard

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/coworkhq/cowork"
	"github.com/coworkhq/cowork/hostd/netstack/policy"
)

// Instance is one row of the page's instance list.
type Instance struct {
	Name string `json:"name"`
	// Parent is the instance a throwaway clone runs for.
	Parent      string `json:"parent,omitempty"`
	State       string `json:"state"` // running, stopped, suspended, unknown; hostd's own while it runs
	Ready       bool   `json:"ready"`
	CPUs        int    `json:"cpus"`
	MemoryBytes int64  `json:"memory_bytes"`
	// Policy sums up the network policy ("allowlist: 3 allowed, 1
	// denied"); Allow, Deny and HostPorts are its lists, for a tooltip.
	Policy    string   `json:"policy"`
	Allow     []string `json:"allow,omitempty"`
	Deny      []string `json:"deny,omitempty"`
	HostPorts []int    `json:"host_ports,omitempty"`
	// Network is what hostd counted since it started (running only).
	Network *Counts `json:"network,omitempty"`
	Note    string  `json:"note,omitempty"`
}

// Counts are an instance's traffic since its hostd started.
type Counts struct {
	Flows       int64 `json:"flows"`
	Blocked     int64 `json:"blocked"`
	DNSQueries  int64 `json:"dns_queries"`
	BytesOut    int64 `json:"bytes_out"`
	BytesIn     int64 `json:"bytes_in"`
	ActiveFlows int64 `json:"active_flows"`
}

// statusTimeout bounds how long a hostd that does not answer holds up
// the instance list.
const statusTimeout = 2 * time.Second

// describe reads the named instance's config, and asks its hostd when it
// runs. It never changes the instance: unlike `cowork status`, it leaves
// what a dead hostd left for the commands that act on it.
func describe(ctx context.Context, name string) Instance {
	in := Instance{Name: name, State: "unknown"}
	inst, err := cowork.Open(name)
	if err != nil {
		in.Note = inert(err.Error())
		return in
	}
	cfg := inst.Config
	in.CPUs, in.MemoryBytes = cfg.CPUs, int64(cfg.Memory)
	if cfg.Throwaway != nil {
		in.Parent = cfg.Throwaway.Parent
	}
	p := cfg.Network.Policy
	in.Policy = policySummary(p)
	in.Allow, in.Deny, in.HostPorts = bound(p.Allow), bound(p.Deny), p.HostPorts
	// Running takes the lock hostd takes at its start, for a moment: a
	// start that fell in that moment would fail. hostd makes its socket
	// after it has the lock, so without one there is no hostd to ask,
	// and the lock is left alone.
	if _, err := os.Stat(inst.Paths.HostdSock()); err != nil || !inst.Running() {
		in.State = "stopped"
		if inst.Saved() != nil {
			in.State = "suspended"
		}
		return in
	}
	ctx, cancel := context.WithTimeout(ctx, statusTimeout)
	defer cancel()
	st, err := inst.Status(ctx)
	switch {
	case errors.Is(err, cowork.ErrNotRunning):
		in.State = "stopped"
	case err != nil:
		in.Note = "hostd does not answer: " + inert(err.Error())
	default:
		in.State, in.Ready = inert(st.State), st.Ready
		if n := st.Network; n != nil {
			in.Network = &Counts{n.Flows, n.Blocked, n.DNSQueries, n.BytesOut, n.BytesIn, n.ActiveFlows}
		}
		if st.CPUs > 0 {
			in.CPUs, in.MemoryBytes = st.CPUs, st.MemoryBytes
		}
		if st.Error != "" {
			in.Note = inert(st.Error)
		}
	}
	return in
}

// policySummary is p in a few words.
func policySummary(p policy.Policy) string {
	mode := p.Mode
	if mode == "" {
		mode = policy.ModeDefault
	}
	parts := []string{}
	if n := len(p.Allow); n > 0 {
		parts = append(parts, fmt.Sprintf("%d allowed", n))
	}
	if n := len(p.Deny); n > 0 {
		parts = append(parts, fmt.Sprintf("%d denied", n))
	}
	if len(p.HostPorts) > 0 {
		ports := make([]string, len(p.HostPorts))
		for i, h := range p.HostPorts {
			ports[i] = strconv.Itoa(h)
		}
		parts = append(parts, "host ports "+strings.Join(ports, ","))
	}
	if len(parts) == 0 {
		return inert(mode)
	}
	return inert(mode + ": " + strings.Join(parts, ", "))
}

// bound keeps a list short and inert for the page.
func bound(l []string) []string {
	if len(l) == 0 {
		return nil
	}
	v := make([]any, len(l))
	for i, s := range l {
		v[i] = s
	}
	out := []string{}
	for _, s := range clean(v).([]any) {
		out = append(out, s.(string))
	}
	return out
}
