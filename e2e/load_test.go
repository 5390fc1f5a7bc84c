//go:build e2e

package e2e

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"fmt"
	"net"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/coworkhq/cowork"
	"github.com/coworkhq/cowork/hostd/agentclient"
	"github.com/coworkhq/cowork/hostd/agentrpc"
)

// TestLoad drives one instance hard: nothing may be lost, nothing may leak.
func TestLoad(t *testing.T) {
	// A host server the guest may reach (an exposed loopback port), writing
	// a known number of bytes to each connection.
	const perConn = 64 << 10
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go func() { c.Write(make([]byte, perConn)); c.Close() }()
		}
	}()
	port := l.Addr().(*net.TCPAddr).Port

	e := newEnv(t)
	e.must(e.initArgs("--allow-host-port", strconv.Itoa(port))...)
	t.Setenv("COWORK_HOME", e.home) // for the Go API in this process

	t.Run("64 concurrent execs of 16 MiB, byte-exact", func(t *testing.T) {
		blob := make([]byte, 16<<20)
		rand.Read(blob)
		sum := sha256.Sum256(blob)
		if r := e.runIn(string(blob), "exec", "cat > /tmp/blob"); r.code != 0 {
			t.Fatalf("upload: %s", r)
		}
		var wg sync.WaitGroup
		bad := make(chan string, 64)
		took := make([]time.Duration, 64)
		for i := range 64 {
			wg.Go(func() {
				began := time.Now()
				r := e.run("exec", "--no-shell", "cat", "/tmp/blob")
				took[i] = time.Since(began)
				if r.code != 0 || sha256.Sum256([]byte(r.out)) != sum {
					bad <- fmt.Sprintf("exec %d: exit %d, %d bytes, %s", i, r.code, len(r.out), r.errOut)
				}
			})
		}
		wg.Wait()
		slices.Sort(took)
		t.Logf("64 execs of 16 MiB at once: each took %v to %v (median %v)", took[0].Round(time.Millisecond),
			took[63].Round(time.Millisecond), took[32].Round(time.Millisecond))
		close(bad)
		for b := range bad {
			t.Error(b)
		}
	})

	t.Run("200 sequential execs leak nothing", func(t *testing.T) {
		ctx := context.Background()
		c, err := cowork.Dial("sandbox")
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		type reading struct{ hostdFDs, hostdGoroutines, agentFDs, agentGoroutines int32 }
		var hostdRSS, agentRSS [2]int64
		measure := func(i int) reading {
			time.Sleep(2 * time.Second) // let closed streams finish closing
			st, err := c.Status(ctx)
			if err != nil {
				t.Fatal(err)
			}
			a, err := agentrpc.New(agentclient.UnixDialer(c.Paths.AgentSock()))
			if err != nil {
				t.Fatal(err)
			}
			defer a.Close()
			info, err := a.Info(ctx)
			if err != nil {
				t.Fatal(err)
			}
			hostdRSS[i], agentRSS[i] = st.HostdProcess.RSSBytes, info.Process.RSSBytes
			// The Info call's own channel is not counted.
			return reading{int32(st.HostdProcess.OpenFDs), int32(st.HostdProcess.Goroutines), info.Process.OpenFDs, info.Process.Goroutines}
		}
		run := func(n int) {
			for i := range n {
				st, err := c.Exec(ctx, agentclient.ExecOptions{Argv: []string{"true"}, Dir: "/"})
				if err != nil || st.Code != 0 {
					t.Fatalf("exec %d: %v, exit %d", i, err, st.Code)
				}
			}
		}
		run(20) // warm up: pools, first connections
		before := measure(0)
		began := time.Now()
		run(200)
		took := time.Since(began)
		after := measure(1)
		t.Logf("200 execs (each on a new agent channel) in %v; hostd fds %d→%d goroutines %d→%d rss %d→%d MiB; agent fds %d→%d goroutines %d→%d rss %d→%d MiB",
			took.Round(time.Millisecond), before.hostdFDs, after.hostdFDs, before.hostdGoroutines, after.hostdGoroutines, hostdRSS[0]>>20, hostdRSS[1]>>20,
			before.agentFDs, after.agentFDs, before.agentGoroutines, after.agentGoroutines, agentRSS[0]>>20, agentRSS[1]>>20)
		if after.hostdFDs > before.hostdFDs+2 || after.agentFDs > before.agentFDs+2 {
			t.Errorf("open fds grew: hostd %d→%d, agent %d→%d", before.hostdFDs, after.hostdFDs, before.agentFDs, after.agentFDs)
		}
		if after.hostdGoroutines > before.hostdGoroutines+5 || after.agentGoroutines > before.agentGoroutines+5 {
			t.Errorf("goroutines grew: hostd %d→%d, agent %d→%d", before.hostdGoroutines, after.hostdGoroutines, before.agentGoroutines, after.agentGoroutines)
		}
		if hostdRSS[1] > hostdRSS[0]+16<<20 || agentRSS[1] > agentRSS[0]+16<<20 {
			t.Errorf("resident memory grew by more than 16 MiB: hostd %d→%d MiB, agent %d→%d MiB", hostdRSS[0]>>20, hostdRSS[1]>>20, agentRSS[0]>>20, agentRSS[1]>>20)
		}
	})

	t.Run("100 concurrent guest connections, every byte in the audit log", func(t *testing.T) {
		script := fmt.Sprintf(`for i in $(seq 100); do
  (exec 3<>/dev/tcp/192.168.127.254/%d && cat <&3 | wc -c) &
done | sort | uniq -c`, port)
		r := e.must("exec", script)
		if strings.TrimSpace(r.out) != fmt.Sprintf("100 %d", perConn) {
			t.Fatalf("the guest received %q, want 100 connections of %d bytes", r.out, perConn)
		}
		dst := fmt.Sprintf("192.168.127.254:%d", port)
		var flows []auditLine
		for range 20 { // a flow is logged when it ends
			flows = flows[:0]
			for _, a := range e.auditLines(t) {
				if a.Kind == "tcp" && a.Dst == dst {
					flows = append(flows, a)
				}
			}
			if len(flows) >= 100 {
				break
			}
			time.Sleep(500 * time.Millisecond)
		}
		if len(flows) != 100 {
			t.Fatalf("the audit log has %d flows to %s, want 100", len(flows), dst)
		}
		for _, f := range flows {
			if f.Verdict != "allow" || f.BytesIn != perConn || f.BytesOut != 0 {
				t.Errorf("flow %+v, want allowed with %d bytes in, 0 out", f, perConn)
			}
		}
	})
}
