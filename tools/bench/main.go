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
	"strings"
	"syscall"
	"time"

	"github.com/coworkhq/cowork/hostd/agentclient"
)

func main() {
	rounds := flag.Int("rounds", 200, "latency samples per contender")
	streams := flag.Int("streams", 3, "throughput runs per contender")
	size := flag.Int64("bytes", 1<<30, "bytes streamed per throughput run")
	flag.Parse()
	if err := run(*rounds, *streams, *size); err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
}

func progress(format string, args ...any) { fmt.Fprintf(os.Stderr, format+"\n", args...) }

func run(rounds, streams int, size int64) error {
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

	ctx := context.Background()
	warm, err := agentclient.New(agentclient.UnixDialer(agent.socket))
	if err != nil {
		return err
	}
	defer warm.Close()
	agentTrue := func(c *agentclient.Client) error {
		st, err := c.Exec(ctx, agentclient.ExecOptions{Argv: []string{"true"}, Dir: "/"})
		if err == nil && st.Code != 0 {
			err = fmt.Errorf("true exited %d", st.Code)
		}
		return err
	}
	if err := agentTrue(warm); err != nil {
		return err
	}
	// Warm the ssh master connection before timing it.
	if err := ssh.command(true, "true").Run(); err != nil {
		return err
	}

	progress("latency: %d rounds of 6 contenders, interleaved", rounds)
	lat, err := interleave(rounds, []func() (time.Duration, error){
		timed(func() error { return exec.Command("true").Run() }),
		timed(func() error { return agentTrue(warm) }),
		timed(func() error {
			c, err := agentclient.New(agentclient.UnixDialer(agent.socket))
			if err != nil {
				return err
			}
			defer c.Close()
			return agentTrue(c)
		}),
		timed(func() error {
			return exec.Command(cowork, "--agent", "unix://"+agent.socket, "exec", "--no-shell", "-w", "/", "true").Run()
		}),
		timed(func() error { return ssh.command(false, "true").Run() }),
		timed(func() error { return ssh.command(true, "true").Run() }),
	})
	if err != nil {
		return err
	}
	local, agentWarm, agentNew, cli, sshCold, sshShared := lat[0], lat[1], lat[2], lat[3], lat[4], lat[5]

	progress("throughput: %d runs of %d MiB per contender, interleaved", streams, size>>20)
	producer := fmt.Sprintf("head -c %d /dev/zero", size)
	tp, err := interleave(streams, []func() (time.Duration, error){
		timed(func() error { return localPipe(producer) }),
		timed(func() error { return rawRelay(dir, producer) }),
		timed(func() error {
			st, err := warm.Exec(ctx, agentclient.ExecOptions{Argv: []string{"sh", "-c", producer}, Dir: "/", Stdout: io.Discard})
			if err == nil && st.Code != 0 {
				err = fmt.Errorf("producer exited %d", st.Code)
			}
			return err
		}),
		timed(func() error {
			cmd := ssh.command(false, producer)
			cmd.Stdout = io.Discard
			return cmd.Run()
		}),
	})
	if err != nil {
		return err
	}
	pipeTP, relayTP, agentTP, sshTP := tp[0].p50(), tp[1].p50(), tp[2].p50(), tp[3].p50()

	machine()
	fmt.Println()
	fmt.Println("| measure | cowork | peer | ratio | target |")
	fmt.Println("| --- | --- | --- | --- | --- |")
	row := func(name, ours, peer string, ratio float64, target string, met bool) {
		mark := "met"
		if !met {
			mark = "MISSED"
		}
		if target == "" {
			mark = ""
		}
		fmt.Printf("| %s | %s | %s | %.2f× | %s %s |\n", name, ours, peer, ratio, target, mark)
	}
	lr := func(s samples) string { return ms(s.p50()) + " (p99 " + ms(s.p99()) + ")" }
	overhead := float64(agentWarm.p50()) / float64(local.p50())
	row("exec `true`, agent (open connection) vs local fork+exec", lr(agentWarm), lr(local), overhead, "≤ 1.5×", overhead <= 1.5)
	newConn := float64(agentNew.p50()) / float64(local.p50())
	row("exec `true`, agent (new connection) vs local fork+exec", lr(agentNew), lr(local), newConn, "", true)
	vsCold := float64(sshCold.p50()) / float64(agentNew.p50())
	row("exec `true`: ssh without ControlMaster ÷ agent (new connection)", lr(agentNew), lr(sshCold), vsCold, "≥ 10×", vsCold >= 10)
	vsShared := float64(sshShared.p50()) / float64(agentWarm.p50())
	row("exec `true`: ssh with ControlMaster ÷ agent (open connection)", lr(agentWarm), lr(sshShared), vsShared, "", true)
	cliRatio := float64(sshCold.p50()) / float64(cli.p50())
	row("whole command: `ssh host true` ÷ `cowork exec --no-shell true`", lr(cli), lr(sshCold), cliRatio, "", true)
	cliShared := float64(sshShared.p50()) / float64(cli.p50())
	row("whole command: `ssh` (ControlMaster) ÷ `cowork exec --no-shell true`", lr(cli), lr(sshShared), cliShared, "", true)
	fmtTP := func(d time.Duration) string { return fmt.Sprintf("%.0f MB/s", mbps(size, d)) }
	stream := float64(sshTP) / float64(agentTP)
	row(fmt.Sprintf("stream %d MiB stdout: agent ÷ ssh (aes128-gcm)", size>>20), fmtTP(agentTP), fmtTP(sshTP), stream, "≥ 1.5×", stream >= 1.5)
	row("stream: agent ÷ raw Go relay over a unix socket (channel ceiling)", fmtTP(agentTP), fmtTP(relayTP), float64(relayTP)/float64(agentTP), "", true)
	row("stream: agent ÷ local pipe (producer ceiling)", fmtTP(agentTP), fmtTP(pipeTP), float64(pipeTP)/float64(agentTP), "", true)
	fmt.Println()
	fmt.Printf("Latency: p50 (p99) of %d interleaved rounds; throughput: median of %d. The agent runs on this host on a unix socket (no VM).\n", rounds, streams)
	return nil
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
