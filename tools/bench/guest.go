//go:build linux

package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"time"

	coworkapi "github.com/coworkhq/cowork"
	"github.com/coworkhq/cowork/hostd/agentclient"
	"github.com/coworkhq/cowork/hostd/controlwire"
	"github.com/coworkhq/cowork/hostd/instance"
	"github.com/coworkhq/cowork/hostd/netstack"
	"github.com/coworkhq/cowork/internal/agentwire"
)

// guestSection measures through a real guest (the e2e guest under QEMU):
// boot to agent ready by phase, and an exec round trip through the whole
// CLI → hostd → QEMU → agent path against ssh into the same guest. It
// needs the guest `make e2e-image` builds (hack/bench.sh passes it).
func guestSection(t *table, rounds, boots int) (err error) {
	kernel, disk := os.Getenv("COWORK_E2E_KERNEL"), os.Getenv("COWORK_E2E_DISK")
	if kernel == "" || disk == "" {
		progress("no e2e guest (COWORK_E2E_*): skipping the guest section; run make bench as root")
		return nil
	}
	dir, err := os.MkdirTemp("", "cowork-bench-guest")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	cowork, err := filepath.Abs("bin/cowork")
	if err != nil {
		return err
	}
	hostdBin := filepath.Join(filepath.Dir(cowork), "cowork-hostd")
	os.Setenv("COWORK_HOME", filepath.Join(dir, "home"))
	sshPort, err := freePort()
	if err != nil {
		return err
	}
	run := func(args ...string) error { return runCowork(cowork, args...) }
	t.section(fmt.Sprintf("through a guest (%s guest under QEMU)", os.Getenv("COWORK_E2E_ARCH")))
	if err := initPhases(t, cowork, []string{"init", "--arch", os.Getenv("COWORK_E2E_ARCH"), "--cpus", "2", "--memory", "1GiB",
		"--disk", "2GiB", "--workspace", filepath.Join(dir, "ws"), "--image", disk,
		"--kernel", kernel, "--initrd", os.Getenv("COWORK_E2E_INITRD"), "--cmdline", os.Getenv("COWORK_E2E_CMDLINE"),
		"--publish", "127.0.0.1:" + strconv.Itoa(sshPort) + ":22"}); err != nil {
		return err
	}
	defer run("delete", "--force")
	defer func() { // runs before the delete above
		if err == nil {
			return
		}
		if paths, perr := instance.PathsFor(instance.DefaultName); perr == nil {
			if b, rerr := os.ReadFile(paths.HostdLog()); rerr == nil {
				progress("hostd.log, last lines:\n%s", lastLines(string(b), 40))
				if f, ferr := os.CreateTemp("", "cowork-bench-hostd-*.log"); ferr == nil {
					f.Write(b)
					f.Close()
					progress("hostd.log kept as %s", f.Name())
				}
			}
		}
	}()
	if err := run("stop"); err != nil {
		return err
	}

	progress("guest: %d boots", boots)
	phases := map[controlwire.Phase][]time.Duration{}
	var stops []time.Duration
	var guestBoots []controlwire.BootPhases
	for i := range boots {
		began := time.Now()
		err := coworkapi.Start(context.Background(), hostdBin, instance.DefaultName, func(ev *controlwire.Event) {
			phases[ev.Phase] = append(phases[ev.Phase], ev.At.Sub(began))
		})
		if err != nil {
			return err
		}
		if st := hostdStatus(); st != nil && st.Boot != nil {
			guestBoots = append(guestBoots, *st.Boot)
		}
		if i == boots-1 {
			break // keep the last boot for the exec measures
		}
		began = time.Now()
		if err := run("stop"); err != nil {
			return err
		}
		stops = append(stops, time.Since(began))
	}

	time.Sleep(2 * time.Second) // idle
	bootRSS := hostdRSS()

	paths, err := instance.PathsFor(instance.DefaultName)
	if err != nil {
		return err
	}
	relay := agentclient.UnixDialer(paths.AgentSock())
	warm, err := agentclient.New(relay)
	if err != nil {
		return err
	}
	defer warm.Close()
	ctx := context.Background()
	ssh := &sshClient{key: os.Getenv("COWORK_E2E_SSH_KEY"), dir: dir, port: sshPort}
	defer ssh.closeMaster()
	for _, warmUp := range []func() error{
		func() error { return execTrue(ctx, warm) },
		func() error {
			// hostd says ready when the agent answers; the guest's sshd
			// may start listening a moment later.
			var err error
			for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline); time.Sleep(time.Second) {
				if err = ssh.command(true, "true").Run(); err == nil {
					return nil
				}
			}
			return fmt.Errorf("ssh into the guest: %w", err)
		},
	} {
		if err := warmUp(); err != nil {
			return fmt.Errorf("warming up: %w", err)
		}
	}

	progress("guest: exec latency, %d rounds of 5 contenders, interleaved (TCG: slow)", rounds)
	l, err := interleave(rounds, []func() (time.Duration, error){
		timed(func() error { return exec.Command(cowork, "exec", "--no-shell", "-w", "/", "true").Run() }),
		timed(func() error { return execTrue(ctx, warm) }),
		timed(func() error { return execTrueNewConn(ctx, relay) }),
		timed(func() error { return ssh.command(false, "true").Run() }),
		timed(func() error { return ssh.command(true, "true").Run() }),
	})
	if err != nil {
		return err
	}
	cli, agentWarm, agentNew, sshCold, sshShared := l[0], l[1], l[2], l[3], l[4]

	progress("guest: the floor, fork+exec+wait of /bin/true inside the guest")
	floor, err := guestFloor(ctx, warm, dir, rounds)
	if err != nil {
		return err
	}

	const streamSize = 64 << 20
	producer := fmt.Sprintf("head -c %d /dev/zero", streamSize)
	progress("guest: streaming %d MiB of stdout, 3 runs of 3 contenders, interleaved", streamSize>>20)
	tp, err := interleave(3, []func() (time.Duration, error){
		timed(func() error { return streamAgent(ctx, warm, producer) }),
		timed(func() error { return streamSSH(ssh, true, producer) }),
		timed(func() error { return streamSource(ctx, relay, streamSize) }),
	})
	if err != nil {
		return err
	}
	agentTP, sshTP, rawTP := tp[0].p50(), tp[1].p50(), tp[2].p50()

	progress("guest: TCP through the guest's network, %d MiB each way, 3 runs", streamSize>>20)
	toHost, fromHost, err := guestTCP(cowork, streamSize)
	if err != nil {
		return err
	}

	hello, err := buildHello(dir)
	if err != nil {
		return err
	}
	cliRounds := 5 * rounds
	progress("guest: CLI start, %d rounds of a bare Go hello and 2 commands, interleaved", cliRounds)
	cl, err := interleave(cliRounds, []func() (time.Duration, error){
		timed(func() error { return exec.Command(hello).Run() }),
		timed(func() error { return exec.Command(cowork, "version").Run() }),
		timed(func() error { return exec.Command(cowork, "status").Run() }),
	})
	if err != nil {
		return err
	}
	time.Sleep(2 * time.Second) // idle
	rss := hostdRSS()
	// After the idle memory above: a thousand flows would weigh on it.
	const provProcs, provConns = 10, 100
	progress("guest: provenance, %d processes holding %d connections each at once", provProcs, provConns)
	prov, err := measureProvenance(cowork, provProcs, provConns)
	if err != nil {
		return err
	}
	warm.Close()
	ssh.closeMaster()

	resume, err := measureResume(cowork, instance.DefaultName, max(3, rounds/4))
	if err != nil {
		return err
	}
	cloned, snapped, err := measureClone(cowork, instance.DefaultName, max(3, rounds/6))
	if err != nil {
		return err
	}
	thrown, err := measureThrowaway(cowork, instance.DefaultName, max(5, rounds/4))
	if err != nil {
		return err
	}

	t.add("accelerator", accelOf(cowork), "", 0, "", false)
	med := func(ds []time.Duration) time.Duration {
		if len(ds) == 0 {
			return 0
		}
		sort.Slice(ds, func(i, j int) bool { return ds[i] < ds[j] })
		return ds[len(ds)/2]
	}
	for _, p := range []struct {
		phase controlwire.Phase
		name  string
	}{
		{controlwire.PhaseVMStarted, "hypervisor running"},
		{controlwire.PhaseKernel, "first console line"},
		{controlwire.PhaseAgentConnected, "agent answers"},
		{controlwire.PhaseReady, "ready"},
	} {
		t.add("`cowork start` → "+p.name, secs(med(phases[p.phase])), "", 0, "", false)
	}
	bootRows(t, guestBoots, med)
	t.add("`cowork stop` (clean shutdown)", secs(med(stops)), "", 0, "", false)
	t.add("whole command: `ssh guest true` ÷ `cowork exec --no-shell true`", lat(cli), lat(sshCold), ratio(sshCold.p50(), cli.p50()), "", false)
	t.add("whole command: `ssh` (ControlMaster) ÷ `cowork exec --no-shell true`", lat(cli), lat(sshShared), ratio(sshShared.p50(), cli.p50()), "", false)
	t.add("exec `true`: ssh without ControlMaster ÷ agent via relay (new connection)", lat(agentNew), lat(sshCold), ratio(sshCold.p50(), agentNew.p50()), "", false)
	vsMux := ratio(sshShared.p50(), agentWarm.p50())
	t.add("exec `true`: ssh with ControlMaster ÷ agent via relay (open connection)", lat(agentWarm), lat(sshShared), vsMux, "≥ 4×", vsMux >= 4)
	t.add("  the floor: fork+exec+wait of /bin/true in the guest, no channel (p50)", fmt.Sprintf("%.2f ms", float64(floor)/1e6), "", 0, "", false)
	t.add("  ssh with ControlMaster ÷ the floor: the most any exec path could reach", "", lat(sshShared), ratio(sshShared.p50(), floor), "", false)
	mb := func(d time.Duration) string { return fmt.Sprintf("%.0f MB/s", mbps(streamSize, d)) }
	t.add(fmt.Sprintf("stream %d MiB stdout from the guest: agent ÷ ssh (ControlMaster)", streamSize>>20), mb(agentTP), mb(sshTP), ratio(sshTP, agentTP), "", false)
	t.add("stream from the guest: agent ÷ raw bytes over the same channel (its limit)", mb(agentTP), mb(rawTP), ratio(rawTP, agentTP), "", false)
	t.add(fmt.Sprintf("TCP guest → host through our stack (dd to bash's /dev/tcp, %d MiB)", streamSize>>20), mb(toHost), "", 0, "", false)
	t.add(fmt.Sprintf("TCP host → guest through our stack (dd from bash's /dev/tcp, %d MiB)", streamSize>>20), mb(fromHost), "", 0, "", false)
	prov.row(t, provProcs, provConns)
	t.add("CLI start: `cowork version` ÷ a bare Go hello binary", lat(cl[1]), lat(cl[0]), ratio(cl[1].p50(), cl[0].p50()), "", false)
	status := ratio(cl[2].p50(), cl[0].p50())
	t.add("CLI start: `cowork status` (one hostd round trip) ÷ a bare Go hello binary", lat(cl[2]), lat(cl[0]), status, "≤ 3×", status <= 3)
	mib := func(n int64) string { return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20)) }
	t.add("hostd resident memory, idle, with a running guest (2 s after the traffic above)", mib(rss), "", 0, "≤ 30 MiB", rss > 0 && rss <= 30<<20)
	t.add("the same, 2 s after the boot, before any traffic", mib(bootRSS), "", 0, "", false)
	resume.rows(t, "the test guest")
	cloneRow(t, cloned, resume.cold, "the test guest")
	t.add("  `cowork snapshot create` of the running test guest (suspend, snapshot with memory, resume)", secs(snapped.p50()), "", 0, "", false)
	thrown.rows(t)

	cloud := os.Getenv("COWORK_E2E_CLOUD_DISK")
	if cloud == "" {
		return nil
	}
	if err := run("stop"); err != nil { // one guest at a time
		return err
	}
	progress("guest: init of the cloud-image stand-in over HTTP, with provisioning")
	defer run("image", "prune", "--force") // deferred first: runs after the delete below
	defer run("delete", "--name", "cloud", "--force")
	cloudArgs := func(name string, more ...string) []string {
		return append([]string{"--name", name, "--arch", os.Getenv("COWORK_E2E_ARCH"),
			"--cpus", "2", "--memory", "1GiB", "--disk", "3GiB", "--workspace", filepath.Join(dir, "ws"),
			"--kernel", kernel, "--initrd", os.Getenv("COWORK_E2E_INITRD"), "--cmdline", os.Getenv("COWORK_E2E_CMDLINE"),
			"--provision-packages", cloudPackages, "--timeout", "40m"}, more...)
	}
	return initFromURL(t, cowork, cloud, cloudArgs("cloud"), cloudArgs("cloud2"), cloudArgs("cloud3", "--no-start"))
}

// cloudPackages is what the bench's cloud-image init provisions: the
// default toolchain's core by Debian's names (Node.js and Claude Code
// come from the internet, which the bench has no need of), so that the
// first init costs what provisioning a real guest costs.
const cloudPackages = "python3,python3-venv,build-essential,git,curl,jq,ripgrep,sqlite3,unzip"

// streamSource reads n bytes from the agent's byte source: the channel
// (hostd's relay, yamux, the virtio-serial port) without gRPC or a process.
func streamSource(ctx context.Context, dial agentclient.Dialer, n int64) error {
	c, err := dial(ctx)
	if err != nil {
		return err
	}
	defer c.Close()
	if _, err := fmt.Fprintf(c, "%s%d\n", agentwire.SourcePreface, n); err != nil {
		return err
	}
	got, err := io.Copy(io.Discard, c)
	if err == nil && got != n {
		err = fmt.Errorf("byte source: got %d bytes, want %d", got, n)
	}
	return err
}

// guestTCP times n bytes each way between bash's /dev/tcp in the guest and
// a listener on the host's loopback, reached through the gateway address
// (`cowork policy expose` lets it through). It returns the medians
// of 3 runs, guest → host and host → guest, timed on the host from the
// connection's accept to its last byte.
func guestTCP(cowork string, n int64) (toHost, fromHost time.Duration, err error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, 0, err
	}
	defer l.Close()
	port := l.Addr().(*net.TCPAddr).Port
	if err := exec.Command(cowork, "policy", "expose", strconv.Itoa(port)).Run(); err != nil {
		return 0, 0, fmt.Errorf("allow host port %d: %w", port, err)
	}
	one := func(send bool) (time.Duration, error) {
		// 1 MiB writes and reads: with head's or cat's small ones, the
		// emulated guest's per-write cost is the limit (head -c: 2.6 MB/s
		// against dd's 18 MB/s, TCP_NODELAY or not).
		script := fmt.Sprintf("dd of=/dev/null bs=1M iflag=fullblock status=none </dev/tcp/%s/%d", netstack.HostIP, port)
		if send {
			script = fmt.Sprintf("dd if=/dev/zero bs=1M count=%d status=none >/dev/tcp/%s/%d", n>>20, netstack.HostIP, port)
		}
		cmd := exec.Command(cowork, "exec", script)
		if err := cmd.Start(); err != nil {
			return 0, err
		}
		c, err := l.Accept()
		if err != nil {
			return 0, err
		}
		start := time.Now()
		var moved int64
		if send {
			moved, err = io.Copy(io.Discard, c)
		} else {
			moved, err = io.Copy(c, io.LimitReader(zeros{}, n))
		}
		took := time.Since(start)
		c.Close()
		if werr := cmd.Wait(); err == nil && werr != nil {
			err = fmt.Errorf("guest side: %w", werr)
		}
		if err == nil && moved != n {
			err = fmt.Errorf("moved %d bytes, want %d", moved, n)
		}
		return took, err
	}
	var up, down samples
	for range 3 {
		for _, send := range []bool{true, false} {
			d, err := one(send)
			if err != nil {
				return 0, 0, fmt.Errorf("guest TCP (guest sending: %v): %w", send, err)
			}
			if send {
				up = append(up, d)
			} else {
				down = append(down, d)
			}
		}
	}
	return up.p50(), down.p50(), nil
}

// hostdStatus is the running instance's status; nil when it cannot be
// asked.
func hostdStatus() *controlwire.Status {
	c, err := coworkapi.Dial(instance.DefaultName)
	if err != nil {
		return nil
	}
	defer c.Close()
	st, err := c.Status(context.Background())
	if err != nil {
		return nil
	}
	return st
}

// hostdRSS is hostd's resident set in bytes as hostd reports it (QEMU is
// a separate process); 0 when it cannot be asked.
func hostdRSS() int64 {
	if st := hostdStatus(); st != nil && st.HostdProcess != nil {
		return st.HostdProcess.RSSBytes
	}
	return 0
}

// bootRows prints where the guest's boots spent their time (medians):
// hostd measures from the VM's start, the guest from its kernel's (its
// agent reports when user space and the agent started and when the agent
// listened). A phase the guest did not report is left out.
func bootRows(t *table, boots []controlwire.BootPhases, med func([]time.Duration) time.Duration) {
	if len(boots) == 0 {
		t.add("guest boot phases", "not reported", "", 0, "", false)
		return
	}
	// from nil: from the clock's origin (the VM's or the kernel's start).
	phase := func(name string, from, to func(controlwire.BootPhases) int64, target time.Duration) {
		var ds []time.Duration
		for _, b := range boots {
			f := int64(0)
			if from != nil {
				if f = from(b); f <= 0 {
					continue // not reported
				}
			}
			if e := to(b); e > 0 && e >= f {
				ds = append(ds, time.Duration(e-f)*time.Millisecond)
			}
		}
		if len(ds) == 0 {
			return
		}
		d := med(ds)
		goal := ""
		if target > 0 {
			goal = "≤ " + secs(target)
		}
		t.add("guest boot: "+name, secs(d), "", 0, goal, target > 0 && d <= target)
	}
	answered := func(b controlwire.BootPhases) int64 { return b.AgentAnsweredMs }
	kernel := func(b controlwire.BootPhases) int64 {
		if b.UptimeMs == 0 {
			return 0
		}
		return b.AgentAnsweredMs - b.UptimeMs
	}
	userspace := func(b controlwire.BootPhases) int64 { return b.UserspaceMs }
	agentStarted := func(b controlwire.BootPhases) int64 { return b.AgentStartedMs }
	listening := func(b controlwire.BootPhases) int64 { return b.AgentListeningMs }
	uptime := func(b controlwire.BootPhases) int64 { return b.UptimeMs }
	phase("VM start → agent answers", nil, answered, 0)
	phase("VM start → guest kernel", nil, kernel, 0)
	phase("kernel → user space (/init)", nil, userspace, 0)
	phase("user space → agent listening (agent up after init starts)", userspace, listening, 300*time.Millisecond)
	phase("the agent's own share: its start → listening", agentStarted, listening, 0)
	phase("agent listening → hostd's first answer", listening, uptime, 0)
}

// accelOf asks the running instance which accelerator it got.
func accelOf(cowork string) string {
	out, err := exec.Command(cowork, "status", "--json").Output()
	if err != nil {
		return "?"
	}
	var st struct{ Accelerator string }
	if json.Unmarshal(out, &st) != nil {
		return "?"
	}
	return st.Accelerator
}

func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	return strings.Join(lines[max(0, len(lines)-n):], "\n")
}

// guestFloor runs the floor program (floorSource) in the guest through
// the agent, from the shared workspace, and returns its median.
func guestFloor(ctx context.Context, c *agentclient.Client, dir string, rounds int) (time.Duration, error) {
	bin, err := buildFloor(filepath.Join(dir, "ws"), os.Getenv("COWORK_E2E_ARCH"))
	if err != nil {
		return 0, err
	}
	var out, errOut strings.Builder
	st, err := c.Exec(ctx, agentclient.ExecOptions{
		Argv: []string{"/workspace/" + filepath.Base(bin), strconv.Itoa(rounds)}, Dir: "/",
		Stdout: &out, Stderr: &errOut,
	})
	if err == nil && st.Code != 0 {
		err = fmt.Errorf("exited %d: %s", st.Code, errOut.String())
	}
	if err != nil {
		return 0, fmt.Errorf("the exec floor in the guest: %w", err)
	}
	us, err := strconv.Atoi(strings.TrimSpace(out.String()))
	if err != nil {
		return 0, fmt.Errorf("the exec floor in the guest printed %q", out.String())
	}
	return time.Duration(us) * time.Microsecond, nil
}
