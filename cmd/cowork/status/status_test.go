package status

import (
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/coworkhq/cowork"
	"github.com/coworkhq/cowork/cmd/cowork/iostreams"
	"github.com/coworkhq/cowork/hostd/instance"
	"github.com/coworkhq/cowork/hostd/instance/instancetest"
	"github.com/coworkhq/cowork/internal/termsafe/termsafetest"
)

func TestNetworkDegradedWhileTheLimitIsHit(t *testing.T) {
	now := time.Date(2030, 1, 2, 15, 4, 5, 0, time.Local)
	stats := func(active, refused int64, last time.Duration) *cowork.NetworkStats {
		n := &cowork.NetworkStats{Flows: 20000, Blocked: 19000, ActiveFlows: active, MaxFlows: 1024, RefusedFlows: refused}
		if refused > 0 {
			n.FirstRefused = now.Add(-time.Hour)
			n.LastRefused = now.Add(-last)
		}
		return n
	}
	for _, c := range []struct {
		name     string
		in       *cowork.NetworkStats
		degraded bool
	}{
		{"never refused", stats(1024, 0, 0), false},
		{"refused a moment ago", stats(3, 18976, 2*time.Second), true},
		{"refused long ago, all slots taken now", stats(1024, 18976, time.Hour), true},
		{"refused long ago, slots free now", stats(3, 18976, time.Hour), false},
	} {
		n := networkFrom(c.in, now, "/home/me/.cowork/sandbox/config.json")
		if (n.Degraded != "") != c.degraded {
			t.Errorf("%s: degraded %q, want %v", c.name, n.Degraded, c.degraded)
		}
		if n.ActiveFlows != c.in.ActiveFlows || n.MaxFlows != 1024 || n.RefusedFlows != c.in.RefusedFlows || (n.LastRefused != nil) != (c.in.RefusedFlows > 0) {
			t.Errorf("%s: %+v", c.name, n)
		}
	}

	st := &Status{Name: "sandbox", State: "running", Ready: true, Network: networkFrom(stats(5, 18976, 2*time.Second), now, "/home/me/.cowork/sandbox/config.json")}
	ios, _, out, _ := iostreams.Test()
	print(ios, st)
	want := "network: degraded: the guest hit the limit of 1024 concurrent connections 18976 times since 14:04:05 (last 2s ago); " +
		"connections past it are refused, see `cowork proxy`; to allow more, raise network.max_flows in /home/me/.cowork/sandbox/config.json and restart\n"
	if !strings.Contains(out.String(), want) {
		t.Errorf("status printed:\n%s\nwant the line:\n%s", out, want)
	}
	if !strings.Contains(out.String(), "flows:      5 open, at most 1024; 18976 refused at the limit, last at 15:04:03") {
		t.Errorf("status printed:\n%s\nwant the flows line", out)
	}

	b, _ := json.Marshal(st)
	var back struct {
		Network map[string]any `json:"network"`
	}
	json.Unmarshal(b, &back)
	for _, k := range []string{"active_flows", "max_flows", "refused_flows", "refused_since", "last_refused", "degraded", "dropped_frames"} {
		if _, ok := back.Network[k]; !ok {
			t.Errorf("--json has no network.%s: %s", k, b)
		}
	}
}

// TestNetworkDegradedWhenAServiceStopped: a service of the guest's
// network that stopped serving (hostd's netstack reports it) makes the
// network degraded, says which and why, and is in --json.
func TestNetworkDegradedWhenAServiceStopped(t *testing.T) {
	now := time.Date(2030, 1, 2, 15, 4, 5, 0, time.Local)
	in := &cowork.NetworkStats{Flows: 3, MaxFlows: 1024, ServeFailures: []cowork.ServeFailure{
		{Service: "proxy", Error: "accept tcp 192.168.127.1:3128: endpoint is closed\x1b[2J", At: now.Add(-time.Minute)},
	}}
	n := networkFrom(in, now, "/home/me/.cowork/sandbox/config.json")
	if len(n.ServeFailures) != 1 || n.ServeFailures[0].Service != "proxy" || !n.ServeFailures[0].At.Equal(now.Add(-time.Minute)) {
		t.Fatalf("serve failures %+v", n.ServeFailures)
	}
	st := &Status{Name: "sandbox", State: "running", Ready: true, Network: n}
	ios, _, out, _ := iostreams.Test()
	print(ios, st)
	want := "network: degraded: proxy stopped serving at 15:03:05 (accept tcp 192.168.127.1:3128: endpoint is closed"
	if !strings.Contains(out.String(), want) || !strings.Contains(out.String(), "until the instance restarts") {
		t.Errorf("status printed:\n%s\nwant the line:\n%s", out, want)
	}
	termsafetest.Check(t, "status", strings.ReplaceAll(out.String(), "\n", ""), false)
	b, _ := json.Marshal(st)
	var back struct {
		Network struct {
			ServeFailures []map[string]any `json:"serve_failures"`
			Degraded      string           `json:"degraded"`
		} `json:"network"`
	}
	json.Unmarshal(b, &back)
	if len(back.Network.ServeFailures) != 1 || back.Network.ServeFailures[0]["service"] != "proxy" || back.Network.Degraded == "" {
		t.Errorf("--json: %s", b)
	}
	// With the limit hit too, both are said.
	in.RefusedFlows, in.FirstRefused, in.LastRefused = 5, now.Add(-time.Hour), now.Add(-time.Second)
	if d := networkFrom(in, now, "config.json").Degraded; !strings.Contains(d, "proxy stopped serving") || !strings.Contains(d, "hit the limit") {
		t.Errorf("degraded %q, want both the failure and the limit", d)
	}
}

// hostile is a status whose guest-made strings all carry the attack.
func hostile() *Status {
	a := termsafetest.Attack
	return &Status{
		Name: "sandbox", State: "stopped", Arch: "arm64", Workspace: "/w",
		AgentVersion: a, Error: "the guest kernel panicked (Kernel panic - not syncing: " + a + ")", Note: a,
		Backend: "qemu", Accelerator: a, Publish: []string{a},
	}
}

func TestPrintShowsGuestTextInert(t *testing.T) {
	ios, _, out, errOut := iostreams.Test()
	print(ios, hostile())
	termsafetest.Check(t, "status", strings.ReplaceAll(out.String(), "\n", ""), false)
	termsafetest.Check(t, "status's note", strings.TrimSuffix(errOut.String(), "\n"), false)
	if !strings.Contains(out.String(), "Kernel panic - not syncing: evil␛[2J") {
		t.Errorf("the stop reason is missing: %s", out)
	}
}

func TestPrintJSONKeepsTheValuesButPrintsSafely(t *testing.T) {
	ios, _, out, _ := iostreams.Test()
	st := hostile()
	if err := printJSON(ios, st); err != nil {
		t.Fatal(err)
	}
	termsafetest.Check(t, "status --json", strings.ReplaceAll(out.String(), "\n", ""), false)
	var back Status
	if err := json.Unmarshal(out.Bytes(), &back); err != nil {
		t.Fatalf("not JSON: %v\n%s", err, out)
	}
	// JSON keeps the value (invalid bytes were U+FFFD through encoding/json
	// already); only its printed form is escaped.
	var want string
	b, _ := json.Marshal(termsafetest.Attack)
	json.Unmarshal(b, &want)
	if back.AgentVersion != want {
		t.Errorf("the value changed: %q, want %q", back.AgentVersion, want)
	}
}

// A stopped instance's status names its secrets by name and host, never
// by value or placeholder, and what init --with added.
func TestStatusNamesSecrets(t *testing.T) {
	instancetest.New(t, instance.Config{Secrets: []instance.Secret{
		{Name: "GH", Host: "github.com:443", Mode: "authorization", Placeholder: "cowork-secret-0123456789abcdef", Store: "file"},
		{Name: "REG", Host: "registry.test:8443", Mode: "basic", Placeholder: "cowork-secret-fedcba9876543210", Store: "file"},
	}, With: []string{instance.WithDocker}})
	st, err := Get(context.Background(), instance.DefaultName)
	if err != nil {
		t.Fatal(err)
	}
	ios, _, out, _ := iostreams.Test()
	print(ios, st)
	if !strings.Contains(out.String(), "secrets:    GH@github.com, REG@registry.test:8443\nwith:       docker\n") || strings.Contains(out.String(), "cowork-secret-") {
		t.Fatalf("status:\n%s", out)
	}
}

// A network in learn mode says so: it lets through more than its policy.
func TestStatusSaysTheNetworkIsLearning(t *testing.T) {
	st := &Status{Name: "sandbox", State: "running", Ready: true, Network: networkFrom(&cowork.NetworkStats{Learning: true}, time.Now(), "config.json")}
	ios, _, out, _ := iostreams.Test()
	print(ios, st)
	if !strings.Contains(out.String(), "policy:     learning (cowork policy learn)") {
		t.Errorf("status printed:\n%s", out)
	}
	if b, _ := json.Marshal(st); !strings.Contains(string(b), `"learning":true`) {
		t.Errorf("--json: %s", b)
	}
}

// TestDroppedFrames: the frames netstack dropped on a full NIC socket
// (ENOBUFS on macOS) reach status, in text and in --json.
func TestDroppedFrames(t *testing.T) {
	n := networkFrom(&cowork.NetworkStats{Flows: 1, MaxFlows: 1024, DroppedFrames: 37}, time.Now(), "config.json")
	ios, _, out, _ := iostreams.Test()
	print(ios, &Status{Name: "sandbox", State: "running", Network: n})
	if !strings.Contains(out.String(), "frames:     37 to the guest dropped") {
		t.Errorf("status printed:\n%s", out)
	}
	b, _ := json.Marshal(&Status{Network: n})
	if !strings.Contains(string(b), `"dropped_frames":37`) {
		t.Errorf("--json: %s", b)
	}
	out.Reset()
	print(ios, &Status{Name: "sandbox", State: "running", Network: networkFrom(&cowork.NetworkStats{}, time.Now(), "config.json")})
	if strings.Contains(out.String(), "frames:") {
		t.Errorf("no frame dropped, yet a line for them:\n%s", out)
	}
}

// TestAuditDown: a network refusing traffic since its audit log cannot be
// written says so, with what to do, in text and in --json; the reason
// comes from hostd and is shown inert.
func TestAuditDown(t *testing.T) {
	why := "audit: the host cannot write the audit log (its disk is full\x1b[2J); new traffic is refused until it can"
	n := networkFrom(&cowork.NetworkStats{Flows: 1, MaxFlows: 1024, AuditDown: why}, time.Now(), "config.json")
	ios, _, out, _ := iostreams.Test()
	print(ios, &Status{Name: "sandbox", State: "running", Network: n})
	if !strings.Contains(out.String(), "audit:      the host cannot write the audit log") || !strings.Contains(out.String(), "free space on the host's disk") || strings.Contains(out.String(), "\x1b") {
		t.Errorf("status printed:\n%q", out)
	}
	b, _ := json.Marshal(&Status{Network: n})
	if !strings.Contains(string(b), `"audit_down":"audit: the host cannot write the audit log`) {
		t.Errorf("--json: %s", b)
	}
	out.Reset()
	print(ios, &Status{Name: "sandbox", State: "running", Network: networkFrom(&cowork.NetworkStats{}, time.Now(), "config.json")})
	if strings.Contains(out.String(), "audit:") {
		t.Errorf("a writable audit log, yet a line for it:\n%s", out)
	}
}

// A throwaway run's clone says whose clone it is, in text and in --json.
func TestStatusNamesAThrowawaysParent(t *testing.T) {
	instancetest.New(t, instance.Config{CPUs: 1, Memory: 1 << 30, Disk: 2 << 30, Arch: "arm64",
		Throwaway: &instance.Throwaway{Parent: "sandbox", Snapshot: "base"}})
	st, err := Get(context.Background(), instance.DefaultName)
	if err != nil || st.ThrowawayOf != "sandbox" {
		t.Fatalf("status: %+v %v", st, err)
	}
	ios, _, out, _ := iostreams.Test()
	print(ios, st)
	if !strings.Contains(out.String(), "clone of:   sandbox (throwaway: deleted once a run has used it)\n") {
		t.Errorf("status:\n%s", out)
	}
	if b, _ := json.Marshal(st); !strings.Contains(string(b), `"throwaway_of":"sandbox"`) {
		t.Errorf("--json: %s", b)
	}
}
