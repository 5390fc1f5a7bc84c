//go:build linux

// Command bench measures the agent channel side by side with its peers and
// prints one table: exec round trip against a local fork+exec and ssh, and
// output throughput against ssh and a raw relay over the same kind of
// socket. Run it with `make bench`; see ../shared/BENCHMARKING.md.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/coworkhq/cowork/hostd/agentclient"
)

func main() {
	rounds := flag.Int("rounds", 200, "latency samples per contender, agent on this host")
	streams := flag.Int("streams", 5, "throughput runs per contender")
	size := flag.Int64("bytes", 1<<30, "bytes streamed per throughput run")
	guestRounds := flag.Int("guest-rounds", 30, "latency samples per contender, through a guest")
	boots := flag.Int("boots", 3, "guest boots timed")
	netBytes := flag.Int64("net-bytes", 128<<20, "bytes per network throughput run")
	netRounds := flag.Int("net-rounds", 300, "new flows and DNS queries timed per contender")
	auditRecords := flag.Int("audit-records", 1_000_000, "records in the audit log verified")
	only := flag.String("only", "", "run only these sections, comma-separated: host, network, audit, image, guest (default: all)")
	flag.Parse()
	t := &table{}
	sections := []string{"host", "network", "audit", "image", "guest"}
	var chosen []string
	if *only != "" {
		chosen = strings.Split(*only, ",")
		for _, c := range chosen {
			if !slices.Contains(sections, c) {
				fmt.Fprintf(os.Stderr, "bench: no section %q in -only; pick from %s\n", c, strings.Join(sections, ", "))
				os.Exit(2)
			}
		}
	}
	want := func(section string) bool { return chosen == nil || slices.Contains(chosen, section) }
	var err error
	for _, s := range []struct {
		name string
		run  func() error
	}{
		{"host", func() error { return hostSection(t, *rounds, *streams, *size) }},
		{"network", func() error { return networkSection(t, *netBytes, *netRounds) }},
		{"audit", func() error { return auditSection(t, *auditRecords, 5) }},
		{"image", func() error { return imageSection(t, 3) }},
		{"guest", func() error { return guestSection(t, *guestRounds, *boots) }},
	} {
		if err == nil && want(s.name) {
			err = s.run()
		}
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
	machine()
	fmt.Println()
	t.print()
	fmt.Println()
	fmt.Println("Latency: p50 (p99) of interleaved rounds; throughput: median of the runs; boot: median of the boots.")
}

func progress(format string, args ...any) { fmt.Fprintf(os.Stderr, format+"\n", args...) }

// hostSection measures the agent channel itself: the agent runs on this
// host on a unix socket, against a local fork+exec and an sshd on loopback.
func hostSection(t *table, rounds, streams int, size int64) error {
	dir, err := os.MkdirTemp("", "cowork-bench")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)

	agent, err := startAgent(dir)
	if err != nil {
		return err
	}
	defer agent.stop()
	ssh, err := startSSHD(dir)
	if err != nil {
		return err
	}
	defer ssh.stop()
	cowork, err := filepath.Abs("bin/cowork")
	if err != nil {
		return err
	}

	hello, err := buildHello(dir)
	if err != nil {
		return err
	}

	ctx := context.Background()
	warm, err := agentclient.New(agentclient.UnixDialer(agent.socket))
	if err != nil {
		return err
	}
	defer warm.Close()
	if err := execTrue(ctx, warm); err != nil {
		return err
	}
	// Warm the ssh master connection before timing it.
	if err := ssh.command(true, "true").Run(); err != nil {
		return err
	}

	// The floor figure is its own pair, A B A B: in the round of six below,
	// a sub-millisecond exec lands next to ssh and CLI runs whose processes
	// are still being torn down when the next contender starts, and what
	// it then measures is that teardown. Both are printed.
	floorRounds := 5 * rounds
	progress("agent on this host, exec floor: %d rounds of local fork+exec and the agent, interleaved", floorRounds)
	floor, err := interleave(floorRounds, []func() (time.Duration, error){
		timed(func() error { return exec.Command("true").Run() }),
		timed(func() error { return execTrue(ctx, warm) }),
	})
	if err != nil {
		return err
	}
	floorLocal, floorAgent := floor[0], floor[1]

	progress("agent on this host, latency: %d rounds of 6 contenders, interleaved", rounds)
	l, err := interleave(rounds, []func() (time.Duration, error){
		timed(func() error { return exec.Command("true").Run() }),
		timed(func() error { return execTrue(ctx, warm) }),
		timed(func() error { return execTrueNewConn(ctx, agentclient.UnixDialer(agent.socket)) }),
		timed(func() error {
			return exec.Command(cowork, "--agent", "unix://"+agent.socket, "exec", "--no-shell", "-w", "/", "true").Run()
		}),
		timed(func() error { return ssh.command(false, "true").Run() }),
		timed(func() error { return ssh.command(true, "true").Run() }),
	})
	if err != nil {
		return err
	}
	local, agentWarm, agentNew, cli, sshCold, sshShared := l[0], l[1], l[2], l[3], l[4], l[5]

	progress("CLI start: %d rounds of a bare Go hello and `cowork version`, interleaved", floorRounds)
	start, err := interleave(floorRounds, []func() (time.Duration, error){
		timed(func() error { return exec.Command(hello).Run() }),
		timed(func() error { return exec.Command(cowork, "version").Run() }),
	})
	if err != nil {
		return err
	}

	progress("agent on this host, throughput: %d runs of %d MiB per contender, interleaved", streams, size>>20)
	producer := fmt.Sprintf("head -c %d /dev/zero", size)
	tp, err := interleave(streams, []func() (time.Duration, error){
		timed(func() error { return localPipe(producer) }),
		timed(func() error { return rawRelay(dir, producer) }),
		timed(func() error { return streamAgent(ctx, warm, producer) }),
		timed(func() error { return streamSSH(&ssh.sshClient, false, producer) }),
	})
	if err != nil {
		return err
	}
	pipeTP, relayTP, agentTP, sshTP := tp[0].p50(), tp[1].p50(), tp[2].p50(), tp[3].p50()

	t.section("agent channel (agent on this host, unix socket, no VM)")
	overhead := ratio(floorAgent.p50(), floorLocal.p50())
	t.add("exec `true`: agent (open connection) ÷ local fork+exec", lat(floorAgent), lat(floorLocal), overhead, "≤ 1.25×", overhead <= 1.25)
	t.add("the same, in the round of six (ssh and CLI neighbours)", lat(agentWarm), lat(local), ratio(agentWarm.p50(), local.p50()), "", false)
	t.add("exec `true`: agent (new connection) ÷ local fork+exec", lat(agentNew), lat(local), ratio(agentNew.p50(), local.p50()), "", false)
	vsCold := ratio(sshCold.p50(), agentNew.p50())
	t.add("exec `true`: ssh without ControlMaster ÷ agent (new connection)", lat(agentNew), lat(sshCold), vsCold, "≥ 10×", vsCold >= 10)
	vsMux := ratio(sshShared.p50(), agentWarm.p50())
	t.add("exec `true`: ssh with ControlMaster ÷ agent (open connection)", lat(agentWarm), lat(sshShared), vsMux, "≥ 15×", vsMux >= 15)
	t.add("whole command: `cowork exec --no-shell true` ÷ `ssh host true`", lat(cli), lat(sshCold), ratio(cli.p50(), sshCold.p50()), "", false)
	cliMux := ratio(cli.p50(), sshShared.p50())
	t.add("whole command: `cowork exec --no-shell true` ÷ `ssh` (ControlMaster)", lat(cli), lat(sshShared), cliMux, "≤ 0.5×", cliMux <= 0.5)
	version := ratio(start[1].p50(), start[0].p50())
	t.add("CLI start: `cowork version` ÷ a bare Go hello binary", lat(start[1]), lat(start[0]), version, "≤ 2×", version <= 2)
	mb := func(d time.Duration) string { return fmt.Sprintf("%.0f MB/s", mbps(size, d)) }
	stream := ratio(sshTP, agentTP)
	t.add(fmt.Sprintf("stream %d MiB stdout: agent ÷ ssh (aes128-gcm)", size>>20), mb(agentTP), mb(sshTP), stream, "≥ 1.5×", stream >= 1.5)
	channel := ratio(relayTP, agentTP)
	t.add("stream: agent ÷ raw Go relay over a unix socket (channel ceiling)", mb(agentTP), mb(relayTP), channel, "≥ 0.8×", channel >= 0.8)
	t.add("stream: agent ÷ local pipe (producer ceiling)", mb(agentTP), mb(pipeTP), ratio(pipeTP, agentTP), "", false)
	return nil
}

// streamAgent runs producer through the agent, its stdout discarded.
func streamAgent(ctx context.Context, c *agentclient.Client, producer string) error {
	st, err := c.Exec(ctx, agentclient.ExecOptions{Argv: []string{"sh", "-c", producer}, Dir: "/", Stdout: io.Discard})
	if err == nil && st.Code != 0 {
		err = fmt.Errorf("producer exited %d", st.Code)
	}
	return err
}

// streamSSH runs producer over ssh (shared: through the ControlMaster),
// its stdout discarded.
func streamSSH(ssh *sshClient, shared bool, producer string) error {
	cmd := ssh.command(shared, producer)
	cmd.Stdout = io.Discard
	return cmd.Run()
}

// ratio is a/b for durations.
func ratio(a, b time.Duration) float64 { return float64(a) / float64(b) }

func execTrue(ctx context.Context, c *agentclient.Client) error {
	st, err := c.Exec(ctx, agentclient.ExecOptions{Argv: []string{"true"}, Dir: "/"})
	if err == nil && st.Code != 0 {
		err = fmt.Errorf("true exited %d", st.Code)
	}
	return err
}

func execTrueNewConn(ctx context.Context, d agentclient.Dialer) error {
	c, err := agentclient.New(d)
	if err != nil {
		return err
	}
	defer c.Close()
	return execTrue(ctx, c)
}

// machine describes where the numbers come from.
func machine() {
	model := "unknown CPU"
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, line := range strings.Split(string(b), "\n") {
			if v, ok := strings.CutPrefix(line, "model name"); ok {
				model = strings.TrimSpace(strings.TrimPrefix(strings.TrimSpace(v), ":"))
				break
			}
		}
	}
	var u syscall.Utsname
	kernel := "?"
	if syscall.Uname(&u) == nil {
		b := make([]byte, 0, len(u.Release))
		for _, c := range u.Release {
			if c == 0 {
				break
			}
			b = append(b, byte(c))
		}
		kernel = string(b)
	}
	fmt.Printf("Machine: %d CPUs (%s), Linux %s, %s/%s, %s\n", runtime.NumCPU(), model, kernel, runtime.GOOS, runtime.GOARCH, runtime.Version())
}

type agentProc struct {
	socket string
	cmd    *exec.Cmd
}

func startAgent(dir string) (*agentProc, error) {
	bin, err := filepath.Abs("bin/cowork-agent-linux-" + runtime.GOARCH)
	if err != nil {
		return nil, err
	}
	if _, err := os.Stat(bin); err != nil {
		return nil, fmt.Errorf("%s missing; run `make agents` first", bin)
	}
	a := &agentProc{socket: filepath.Join(dir, "agent.sock")}
	a.cmd = exec.Command(bin, "--listen", "unix://"+a.socket)
	a.cmd.Stderr, _ = os.Create(filepath.Join(dir, "agent.log"))
	if err := a.cmd.Start(); err != nil {
		return nil, err
	}
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		if c, err := net.Dial("unix", a.socket); err == nil {
			c.Close()
			return a, nil
		}
	}
	a.stop()
	return nil, errors.New("agent did not listen")
}

func (a *agentProc) stop() {
	a.cmd.Process.Signal(syscall.SIGTERM)
	a.cmd.Wait()
}

// localPipe reads the producer's output straight from a pipe: the most
// any channel could deliver from it.
func localPipe(producer string) error {
	cmd := exec.Command("sh", "-c", producer)
	cmd.Stdout = io.Discard
	return cmd.Run()
}

// rawRelay moves the producer's output through a unix socket with plain
// io.Copy on both sides: the channel without any protocol on it.
func rawRelay(dir, producer string) error {
	sock := filepath.Join(dir, "relay.sock")
	os.Remove(sock)
	l, err := net.Listen("unix", sock)
	if err != nil {
		return err
	}
	defer l.Close()
	errc := make(chan error, 1)
	go func() {
		c, err := l.Accept()
		if err != nil {
			errc <- err
			return
		}
		defer c.Close()
		f, err := c.(*net.UnixConn).File() // the producer writes into the socket itself
		if err != nil {
			errc <- err
			return
		}
		defer f.Close()
		cmd := exec.Command("sh", "-c", producer)
		cmd.Stdout = f
		errc <- cmd.Run()
		c.Close()
	}()
	c, err := net.Dial("unix", sock)
	if err != nil {
		return err
	}
	defer c.Close()
	if _, err := io.Copy(io.Discard, c); err != nil {
		return err
	}
	return <-errc
}
