package dashboard

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"os"
	"testing"
	"time"

	"github.com/coworkhq/cowork/hostd/instance"
	"github.com/coworkhq/cowork/hostd/instance/instancetest"
	"github.com/coworkhq/cowork/hostd/netstack/audit"
	"github.com/coworkhq/cowork/hostd/netstack/policy"
)

// TestScreenshot writes docs/dashboard.png: the page at 1680x860 over a
// realistic synthetic log (demoLogs). It runs only when asked:
// hack/dashboard-screenshot.sh sets COWORK_DASHBOARD_SCREENSHOT to the
// file to write.
func TestScreenshot(t *testing.T) {
	out := os.Getenv("COWORK_DASHBOARD_SCREENSHOT")
	if out == "" {
		t.Skip("COWORK_DASHBOARD_SCREENSHOT is not set (hack/dashboard-screenshot.sh sets it)")
	}
	demoLogs(t, time.Now())
	s := start(t, Options{})
	b := openPage(t, s)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := b.Call(ctx, b.session, "Emulation.setDeviceMetricsOverride", map[string]any{"width": 1680, "height": 860, "deviceScaleFactor": 1, "mobile": false}, nil); err != nil {
		t.Fatal(err)
	}
	if err := b.Call(ctx, b.session, "Emulation.setEmulatedMedia", map[string]any{"features": []map[string]string{{"name": "prefers-color-scheme", "value": "light"}}}, nil); err != nil {
		t.Fatal(err)
	}
	b.waitFor(t, "the demo", `document.querySelectorAll("#flows-body tr").length > 20 && document.querySelectorAll("#chart rect").length > 5 && document.getElementById("instances-body").innerText.includes("ready")`, 10*time.Second)
	b.eval(t, `window.dispatchEvent(new Event("resize"))`, nil)
	b.key(t, "Tab")
	b.key(t, "Tab")
	b.eval(t, `document.getElementById("flows-body").focus()`, nil)
	b.key(t, "j")
	b.key(t, "j")
	time.Sleep(500 * time.Millisecond)
	var shot struct{ Data string }
	if err := b.Call(ctx, b.session, "Page.captureScreenshot", map[string]any{"format": "png"}, &shot); err != nil {
		t.Fatal(err)
	}
	png, err := base64.StdEncoding.DecodeString(shot.Data)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(out, png, 0o644); err != nil {
		t.Fatal(err)
	}
	t.Logf("wrote %s, %d KiB", out, len(png)>>10)
}

// demoLogs makes a COWORK_HOME of two instances, one running, whose logs
// hold half an hour of a developer's work ending at now: Claude Code
// sessions through the relay, package downloads, the policy refusing
// the metadata address, a tracker and a name the guest forged, and two
// throwaway runs in runs.jsonl.
func demoLogs(t *testing.T, now time.Time) {
	p, _ := instancetest.New(t, instance.Config{CPUs: 4, Memory: 8 << 30, Network: instance.Network{Policy: policy.Policy{
		Mode: policy.ModeAllowlist, Allow: []string{"api.anthropic.com", "pypi.org", "files.pythonhosted.org", "github.com", "*.githubusercontent.com"}}}})
	instancetest.Running(t, p, true)
	web := addInstance(t, instance.Config{Name: "web", CPUs: 2, Memory: 4 << 30, Network: instance.Network{Policy: policy.Policy{Deny: []string{"tracker.example"}, HostPorts: []int{5432}}}})

	at := func(min, sec int) time.Time {
		return now.Add(time.Duration(-30+min)*time.Minute + time.Duration(sec)*time.Second)
	}
	relay := func(tm time.Time, session string, in int64) *audit.Record {
		return &audit.Record{Time: tm, Start: tm.Add(-4 * time.Second), DurationMs: 4000, Kind: audit.KindRelay, Verdict: audit.Allow, Name: "api.anthropic.com", NameFrom: audit.FromProxy,
			Rule: "relay session " + session, Session: session, Method: "POST", URL: "/v1/messages", Status: 200, BytesOut: in, BytesIn: 9000 + in/7,
			Usage: &audit.Usage{Model: "claude-sonnet-4-5", InputTokens: in / 4, CacheReadInputTokens: in / 2, OutputTokens: 600 + in/90,
				CostUSD: float64(in/4)*3e-6 + float64(in/2)*0.3e-6 + float64(600+in/90)*15e-6}}
	}
	// The guest processes behind the flows, as the agent names them.
	pip := &audit.Owner{Exec: "a41f0c9e2b7d6e13", PID: 2817, UID: 1000, Comm: "pip", Cmd: "pip install -r requirements.txt", ClaimedBy: audit.ClaimedByGuest}
	git := &audit.Owner{Exec: "5be0d7718c2a94f0", PID: 3340, UID: 1000, Comm: "git", Cmd: "git clone https://github.com/psf/requests", ClaimedBy: audit.ClaimedByGuest}
	owned := func(r *audit.Record, o *audit.Owner) *audit.Record { r.Owner = o; return r }
	flow := func(tm time.Time, name, dst string, in int64) *audit.Record {
		return &audit.Record{Time: tm, Start: tm.Add(-time.Second), DurationMs: 900, Kind: audit.KindTCP, Verdict: audit.Allow, Name: name, NameFrom: audit.FromDNS, Dst: dst, Rule: "allow " + name, BytesOut: 2100, BytesIn: in}
	}
	dns := func(tm time.Time, name, answer string) *audit.Record {
		return &audit.Record{Time: tm, Kind: audit.KindDNS, Verdict: audit.Allow, Name: name, QType: "A", RCode: "NOERROR", Answers: []string{answer}, Rule: "allow " + name}
	}
	var recs []*audit.Record
	for i := range 14 { // an ask session, a call every minute or two
		recs = append(recs, relay(at(i*2/3+1, (i*37)%60), "7c1e92d0", int64(18000+i*5200)))
	}
	recs = append(recs,
		dns(at(2, 3), "pypi.org", "151.101.0.223"), owned(flow(at(2, 4), "pypi.org", "151.101.0.223:443", 48213), pip),
		dns(at(2, 5), "files.pythonhosted.org", "151.101.1.63"), owned(flow(at(2, 9), "files.pythonhosted.org", "151.101.1.63:443", 11<<20), pip),
		&audit.Record{Time: at(4, 12), Kind: audit.KindTCP, Verdict: audit.Deny, Dst: "169.254.169.254:80", Rule: "private network (cloud metadata)"},
		dns(at(6, 40), "github.com", "140.82.121.4"), owned(flow(at(6, 44), "github.com", "140.82.121.4:443", 2<<20), git),
		&audit.Record{Time: at(7, 1), Kind: audit.KindDNS, Verdict: audit.Deny, Name: "registry.npmjs.org", QType: "A", RCode: "REFUSED", Rule: "not in the allowlist"},
		&audit.Record{Time: at(9, 30), Kind: audit.KindTCP, Verdict: audit.Allow, Name: "pypi.org", NameFrom: audit.FromDNS, Dst: "151.101.0.223:443", ClaimedName: "bank.example", ClaimedFrom: audit.FromSNI, NameMismatch: true, Rule: "allow pypi.org", BytesOut: 517, BytesIn: 3100},
	)
	for i := range 10 { // a second session, later and busier
		recs = append(recs, relay(at(18+i/2, (i*23)%60), "e41b07aa", int64(30000+i*8000)))
		recs = append(recs, dns(at(18+i/2, (i*23)%60+1), "objects.githubusercontent.com", "185.199.108.133"))
	}
	recs = append(recs, owned(flow(at(24, 2), "objects.githubusercontent.com", "185.199.108.133:443", 31<<20), git))
	writeRecords(t, p, recs...)
	writeRecords(t, web,
		dns(at(20, 0), "tracker.example", "0.0.0.0"),
		&audit.Record{Time: at(20, 1), Kind: audit.KindTCP, Verdict: audit.Deny, Name: "tracker.example", Dst: "203.0.113.50:443", Rule: "deny tracker.example"},
		flow(at(21, 0), "registry.npmjs.org", "104.16.24.35:443", 7<<20),
		&audit.Record{Time: at(22, 0), Kind: audit.KindTCP, Verdict: audit.Allow, Name: "host.cowork.internal", Dst: "192.168.127.254:5432", Rule: "host port 5432", BytesOut: 8800, BytesIn: 160000},
	)

	// Two throwaway runs of sandbox, in its runs.jsonl.
	runs, err := os.Create(p.Runs())
	if err != nil {
		t.Fatal(err)
	}
	defer runs.Close()
	line := func(id string, r *audit.Record) {
		r.RunID = id
		b, err := json.Marshal(r)
		if err != nil {
			t.Fatal(err)
		}
		fmt.Fprintf(runs, "%s\n", b)
	}
	for i := range 8 {
		line("3f9c2a1b", relay(at(11+i/2, (i*29)%60), "5d0c33e1", int64(22000+i*9000)))
	}
	line("3f9c2a1b", &audit.Record{Time: at(15, 30), Start: at(11, 0), DurationMs: 270000, Kind: audit.KindRun,
		Run: &audit.RunInfo{Instance: "sandbox-rm-3f9c2a1b", Snapshot: "base", Ready: "hot", What: "ask", Command: "fix the failing tests in api/", ExitCode: 0,
			Stats: audit.Stats{Flows: 8, Queries: 2, BytesOut: 250000, BytesIn: 96000}}})
	line("8d04e6f2", dns(at(26, 10), "pypi.org", "151.101.0.223"))
	line("8d04e6f2", owned(flow(at(26, 12), "files.pythonhosted.org", "151.101.1.63:443", 23<<20), pip))
	line("8d04e6f2", &audit.Record{Time: at(26, 14), Kind: audit.KindTCP, Verdict: audit.Deny, Name: "evil.example", Dst: "198.51.100.66:443", Rule: "not in the allowlist"})
	line("8d04e6f2", &audit.Record{Time: at(26, 40), Start: at(26, 0), DurationMs: 40000, Kind: audit.KindRun,
		Run: &audit.RunInfo{Instance: "sandbox-rm-8d04e6f2", Snapshot: "base", Ready: "warm", What: "exec", Command: "pip install -r requirements.txt", ExitCode: 0,
			Stats: audit.Stats{Flows: 2, Blocked: 1, Queries: 1, BytesOut: 4200, BytesIn: 23 << 20}}})
}
