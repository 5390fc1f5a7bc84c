//go:build linux

package main

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/coworkhq/cowork/hostd/instance"
	"github.com/coworkhq/cowork/hostd/netstack"
	"github.com/coworkhq/cowork/hostd/netstack/audit"
	"github.com/coworkhq/cowork/hostd/netstack/policy"
	"github.com/coworkhq/cowork/internal/agentcall"
)

// provenanceCost is decisionCost with the flow's provenance: its owner
// lookup queued at its start, its first answer held for the owner, and
// the owner joined to its audit line at its end, from a source that
// answers at once. Each flow's two parts are
// timed apart, with the flows' lives between them (the answers come in
// meanwhile, as they do while a flow runs), and added.
func provenanceCost(dir string, n int) (samples, error) {
	rules, b, dst, al, err := decisionSetup(dir, "provenance")
	if err != nil {
		return nil, err
	}
	defer al.Close()
	p := netstack.NewProvenance(func(_ context.Context, socks []agentcall.Socket) ([]agentcall.SocketOwner, error) {
		out := make([]agentcall.SocketOwner, len(socks))
		for i, s := range socks {
			out[i] = agentcall.SocketOwner{Socket: s, PID: 1000 + s.Port%10, UID: 1000, Exec: "0123456789abcdef", Comm: "curl", Cmd: "curl -sS https://codeload.github.com/x"}
		}
		return out, nil
	})
	defer p.Close()
	s := make(samples, n)
	recs := make([]*audit.Record, n)
	for i := range n {
		start := time.Now()
		names := b.Names(dst.Addr())
		v := rules.CheckFlow(policy.TCP, dst, names)
		recs[i] = &audit.Record{Kind: audit.KindTCP, Verdict: audit.Allow, Rule: v.Rule, Name: names[0], NameFrom: audit.FromDNS,
			Start: start, Dst: dst.String(), GuestPort: 1024 + i%60000, BytesOut: 1234, BytesIn: 56789}
		p.Ask(recs[i], "tcp", recs[i].GuestPort, dst)
		s[i] = time.Since(start)
		if i%256 == 255 {
			time.Sleep(5 * time.Millisecond) // flows live: the batches are answered
		}
	}
	time.Sleep(20 * time.Millisecond)
	late := 0
	for i, r := range recs {
		start := time.Now()
		p.Hold(r)
		p.Then(r, func(r *audit.Record) {
			if r.Owner == nil {
				late++
			}
			al.Write(r)
		})
		s[i] += time.Since(start)
	}
	if late > n/100 {
		return nil, fmt.Errorf("provenance cost: %d of %d records without their owner", late, n)
	}
	return s, nil
}

// provenanceJoin is how the audit log named the flows of procs guest
// processes that each opened conns connections at once, all held open
// together: how many records named the process that opened the flow
// (right), another one (wrong), or none.
type provenanceJoin struct {
	flows, right, wrong, none int
	concurrent                int
}

// measureProvenance has procs processes in the running guest each open
// conns TCP connections to a port of its own on the host's loopback
// (exposed), hold them until every one is open, then close them; each
// prints its pid and port, so that each flow's process is known by its
// destination. The connections are opened with bash's /dev/tcp, and held
// without a child process (a child would hold the sockets too).
func measureProvenance(cowork string, procs, conns int) (provenanceJoin, error) {
	var j provenanceJoin
	paths, err := instance.PathsFor(instance.DefaultName)
	if err != nil {
		return j, err
	}
	var (
		mu         sync.Mutex
		open, peak int
		held       []net.Conn
	)
	ports := make([]int, procs)
	for i := range procs {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return j, err
		}
		defer l.Close()
		ports[i] = l.Addr().(*net.TCPAddr).Port
		go func() {
			for {
				c, err := l.Accept()
				if err != nil {
					return
				}
				mu.Lock()
				open++
				peak = max(peak, open)
				held = append(held, c)
				mu.Unlock()
				go func() {
					io.Copy(io.Discard, c)
					c.Close() // the guest closed: the flow ends, its line is written
					mu.Lock()
					open--
					mu.Unlock()
				}()
			}
		}()
		if err := runCowork(cowork, "policy", "expose", strconv.Itoa(ports[i])); err != nil {
			return j, err
		}
	}
	defer func() {
		mu.Lock()
		for _, c := range held {
			c.Close()
		}
		mu.Unlock()
	}()
	var script strings.Builder
	script.WriteString("d=$(mktemp -d)\n")
	for _, port := range ports {
		fmt.Fprintf(&script, "mkfifo $d/%d\n(exec {go}<>$d/%d; for ((i = 0; i < %d; i++)); do exec {c}<>/dev/tcp/%s/%d || exit 1; done; echo $BASHPID %d; read -r -t 120 -u $go) &\n",
			port, port, conns, netstack.HostIP, port, port)
	}
	script.WriteString("echo ready $d\nwait\n")
	since := time.Now()
	cmd := exec.Command(cowork, "exec", script.String())
	out, err := cmd.StdoutPipe()
	if err != nil {
		return j, err
	}
	if err := cmd.Start(); err != nil {
		return j, err
	}
	defer cmd.Process.Kill()
	pidOf := map[string]int{} // the destination to the pid that opened its flows
	var fifos string
	lines := bufio.NewScanner(out)
	for lines.Scan() {
		f := strings.Fields(lines.Text())
		if len(f) == 2 && f[0] == "ready" {
			fifos = f[1]
			continue
		}
		if len(f) != 2 {
			continue
		}
		pid, _ := strconv.Atoi(f[0])
		pidOf[netstack.HostIP+":"+f[1]] = pid
		if len(pidOf) == procs {
			break
		}
	}
	if len(pidOf) != procs || fifos == "" {
		return j, fmt.Errorf("provenance: %d of %d guest processes opened their connections", len(pidOf), procs)
	}
	deadline := time.Now().Add(time.Minute)
	for {
		mu.Lock()
		all := len(held) >= procs*conns
		mu.Unlock()
		if all || time.Now().After(deadline) {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	mu.Lock()
	j.concurrent = peak
	mu.Unlock()
	// Let them go: each process's read ends, it exits, its sockets close.
	if err := runCowork(cowork, "exec", "for f in "+fifos+"/*; do echo > $f; done"); err != nil {
		return j, err
	}
	io.Copy(io.Discard, out)
	if err := cmd.Wait(); err != nil {
		return j, fmt.Errorf("the guest's connections: %w", err)
	}
	// Each flow's line is written once both its ends closed and its owner
	// is in (a second at most).
	want := procs * conns
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(250 * time.Millisecond) {
		j = provenanceJoin{concurrent: j.concurrent}
		_, err := audit.Stream(context.Background(), paths.NetworkLog(), since, false, func(r *audit.Record) error {
			pid, ok := pidOf[r.Dst]
			if r.Kind != audit.KindTCP || !ok {
				return nil
			}
			j.flows++
			switch {
			case r.Owner == nil:
				j.none++
			case r.Owner.PID == pid:
				j.right++
			default:
				j.wrong++
			}
			return nil
		})
		if err != nil {
			return j, err
		}
		if j.flows >= want || time.Now().After(deadline) {
			break
		}
	}
	j.none += max(0, want-j.flows) // a flow without its line is no join
	return j, nil
}

// row is the table's line for j: the share of flows named for the right
// process, against the target.
func (j provenanceJoin) row(t *table, procs, conns int) {
	want := procs * conns
	share := float64(j.right) / float64(want)
	t.add(fmt.Sprintf("provenance: flows of %d concurrent guest connections from %d processes named for the right process", want, procs),
		fmt.Sprintf("%.1f%% (%d right, %d wrong, %d unnamed; %d open at once)", 100*share, j.right, j.wrong, j.none, j.concurrent),
		"", 0, "≥ 99%", share >= 0.99)
}
