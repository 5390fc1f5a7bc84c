//go:build e2e

package e2e

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// stormScript opens N connections to the host one after another, as root
// with the descriptors for it, holds those that connect, and reports; it
// then waits for /tmp/storm.release.
const stormScript = `
import os, resource, socket, sys, time
n, port = int(sys.argv[1]), int(sys.argv[2])
resource.setrlimit(resource.RLIMIT_NOFILE, (n + 1024, n + 1024))
held, refused, other = [], 0, {}
began = time.time()
for i in range(n):
    s = socket.socket()
    s.settimeout(60)
    try:
        s.connect(("192.168.127.254", port))
        held.append(s)
    except ConnectionRefusedError:
        refused += 1
        s.close()
    except OSError as e:
        other[str(e)] = other.get(str(e), 0) + 1
        s.close()
report = "held=%d refused=%d other=%r seconds=%d" % (len(held), refused, other, time.time() - began)
open("/tmp/storm.out", "w").write(report + "\n")
print(report, flush=True)
while not os.path.exists("/tmp/storm.release"):
    time.sleep(0.2)
`

// TestFlowStormFromTheGuest: root in the guest opens 8,192 TCP connections
// to a host service. Before the limits, hostd ran out of descriptors and
// agent.sock stopped answering. Now the guest gets max_flows of them and
// the rest refused; hostd's descriptors stay bounded; commands run during
// and after; status says the network is degraded; the audit log sums the
// refusals up in a few lines; and connections work again once the guest
// lets go.
func TestFlowStormFromTheGuest(t *testing.T) {
	const storm = 8192 // 8 times the default limit: enough to show the bound holds
	var accepted atomic.Int64
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var conns []net.Conn
	defer func() {
		l.Close()
		mu.Lock()
		for _, c := range conns {
			c.Close()
		}
		mu.Unlock()
	}()
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			accepted.Add(1)
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
			go func() { // silent; closes when the guest does, as servers do
				io.Copy(io.Discard, c)
				c.Close()
			}()
		}
	}()
	port := l.Addr().(*net.TCPAddr).Port

	e := newEnv(t)
	e.must(e.initArgs("--allow-host-port", strconv.Itoa(port))...)
	st := e.flowStatus(t)
	maxFlows := st.Network.MaxFlows
	if maxFlows <= 0 || maxFlows > 4096 {
		t.Fatalf("max_flows %d: want the default", maxFlows)
	}
	if err := os.WriteFile(filepath.Join(e.workspace, "storm.py"), []byte(stormScript), 0o644); err != nil {
		t.Fatal(err)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Minute)
	defer cancel()
	stormCmd := e.cmd(ctx, "exec", "--user", "root", "--no-shell", "python3", "/workspace/storm.py", strconv.Itoa(storm), strconv.Itoa(port))
	var stormOut, stormErr bytes.Buffer
	stormCmd.Stdout, stormCmd.Stderr = &stormOut, &stormErr
	if err := stormCmd.Start(); err != nil {
		t.Fatal(err)
	}
	stormDone := make(chan error, 1)
	go func() { stormDone <- stormCmd.Wait() }()
	defer e.run("exec", "--user", "root", "touch /tmp/storm.release")

	// While the storm runs and holds what it got: commands still run.
	began := time.Now()
	var report string
	for report == "" {
		select {
		case err := <-stormDone:
			t.Fatalf("the storm ended early: %v\n%s\n%s", err, stormOut.String(), stormErr.String())
		case <-time.After(5 * time.Second):
		}
		if time.Since(began) > 15*time.Minute {
			t.Fatal("the storm did not finish in 15 minutes")
		}
		r := e.run("exec", "cat /tmp/storm.out 2>/dev/null || true")
		if r.code != 0 {
			t.Fatalf("a command during the storm: %s", r)
		}
		report = strings.TrimSpace(r.out)
	}
	t.Logf("the guest's storm: %s", report)
	m := regexp.MustCompile(`^held=(\d+) refused=(\d+) other=(.*) seconds=(\d+)$`).FindStringSubmatch(report)
	if m == nil {
		t.Fatalf("storm report %q", report)
	}
	held, _ := strconv.ParseInt(m[1], 10, 64)
	refused, _ := strconv.ParseInt(m[2], 10, 64)
	if held > maxFlows || held < maxFlows/2 || held+refused != storm {
		t.Errorf("the guest held %d and was refused %d of %d connections (other errors: %s); want at most max_flows (%d) held, the rest refused",
			held, refused, storm, m[3], maxFlows)
	}
	if got := accepted.Load(); got > maxFlows {
		t.Errorf("the host service accepted %d connections, more than max_flows %d", got, maxFlows)
	}

	e.must("exec", "true")
	st = e.flowStatus(t)
	n := st.Network
	if !strings.Contains(n.Degraded, fmt.Sprintf("limit of %d concurrent connections", maxFlows)) || n.RefusedFlows < refused || n.ActiveFlows > maxFlows {
		t.Errorf("status while the limit is hit: %+v", n)
	}
	text := e.must("status").out
	if !strings.Contains(text, "network: degraded: the guest hit the limit") {
		t.Errorf("status does not say the network is degraded:\n%s", text)
	}
	fds := countFDs(t, st.HostdPid)
	if fds > int(maxFlows)+512 || st.HostdOpenFDs > int(maxFlows)+512 {
		t.Errorf("hostd holds %d descriptors (status: %d) with %d flows open; want at most max_flows + 512", fds, st.HostdOpenFDs, n.ActiveFlows)
	}
	t.Logf("hostd: %d descriptors; status: %d of %d flows open, %d refused", fds, n.ActiveFlows, maxFlows, n.RefusedFlows)

	// Letting go: the slots come back, and the guest connects again.
	e.must("exec", "--user", "root", "touch /tmp/storm.release")
	if err := <-stormDone; err != nil {
		t.Fatalf("the storm: %v\n%s", err, stormErr.String())
	}
	deadline := time.Now().Add(2 * time.Minute)
	for e.flowStatus(t).Network.ActiveFlows > 16 {
		if time.Now().After(deadline) {
			t.Fatalf("flows still open after the storm ended: %+v", e.flowStatus(t).Network)
		}
		time.Sleep(2 * time.Second)
	}
	before := accepted.Load()
	if r := e.run("exec", fmt.Sprintf("exec 3<>/dev/tcp/192.168.127.254/%d && echo connected", port)); r.code != 0 || strings.TrimSpace(r.out) != "connected" {
		t.Fatalf("a connection after the storm: %s", r)
	}
	if accepted.Load() != before+1 {
		t.Errorf("the host service saw %d new connections, want 1", accepted.Load()-before)
	}

	// The audit log: every refusal accounted for, in a handful of lines.
	// Summaries are written when their 10 s window ends.
	st = e.flowStatus(t)
	time.Sleep(time.Until(st.Network.LastRefused.Add(12 * time.Second)))
	lines, denials := limitLines(t, e.instanceDir("sandbox"))
	windows := int(st.Network.LastRefused.Sub(*st.Network.RefusedSince)/(10*time.Second)) + 2
	if denials != st.Network.RefusedFlows || lines > windows*(2*32+8) {
		t.Errorf("the audit log has %d lines standing for %d refusals; want %d refusals in at most %d lines", lines, denials, st.Network.RefusedFlows, windows*(2*32+8))
	}
	t.Logf("the audit log: %d lines for %d refusals over %d windows", lines, denials, windows)
}

// flowStatusJSON is what the storm test reads of `cowork status --json`.
type flowStatusJSON struct {
	HostdPid     int `json:"hostd_pid"`
	HostdOpenFDs int `json:"hostd_open_fds"`
	Network      struct {
		ActiveFlows  int64      `json:"active_flows"`
		MaxFlows     int64      `json:"max_flows"`
		RefusedFlows int64      `json:"refused_flows"`
		RefusedSince *time.Time `json:"refused_since"`
		LastRefused  *time.Time `json:"last_refused"`
		Degraded     string     `json:"degraded"`
	} `json:"network"`
}

func (e *env) flowStatus(t *testing.T) flowStatusJSON {
	t.Helper()
	var st flowStatusJSON
	r := e.must("status", "--json")
	if err := json.Unmarshal([]byte(r.out), &st); err != nil {
		t.Fatalf("status --json: %v\n%s", err, r.out)
	}
	return st
}

func countFDs(t *testing.T, pid int) int {
	t.Helper()
	ents, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
	if err != nil {
		t.Fatal(err)
	}
	return len(ents)
}

// limitLines reads the instance's audit log (rotated files too) for the
// flows refused by the limits and the throttle's summaries: how many
// lines, and how many refusals they stand for.
func limitLines(t *testing.T, dir string) (lines int, denials int64) {
	t.Helper()
	files, _ := filepath.Glob(filepath.Join(dir, "network.jsonl*"))
	for _, f := range files {
		fh, err := os.Open(f)
		if err != nil {
			t.Fatal(err)
		}
		sc := bufio.NewScanner(fh)
		sc.Buffer(make([]byte, 1<<20), 1<<20)
		for sc.Scan() {
			var r struct {
				Kind, Verdict, Rule string
				Suppressed          int64
			}
			if json.Unmarshal(sc.Bytes(), &r) != nil || r.Kind == "dns" || r.Verdict != "deny" {
				continue
			}
			if strings.HasPrefix(r.Rule, "limit:") || strings.HasPrefix(r.Rule, "throttled:") {
				lines++
				denials += max(r.Suppressed, 1)
			}
		}
		fh.Close()
	}
	return lines, denials
}
