//go:build e2e

// Package e2e drives the real bin/cowork against real guests under QEMU, as
// a user would. Run it with `make e2e`, which builds the test guest and
// passes its paths in the environment.
package e2e

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// guest is the test guest `make e2e-image` built.
type guest struct {
	kernel, initrd, disk, cmdline, arch string
}

var (
	bin       string // bin/cowork
	testGuest guest
)

func TestMain(m *testing.M) {
	bin = os.Getenv("COWORK_E2E_BIN")
	testGuest = guest{
		kernel:  os.Getenv("COWORK_E2E_KERNEL"),
		initrd:  os.Getenv("COWORK_E2E_INITRD"),
		disk:    os.Getenv("COWORK_E2E_DISK"),
		cmdline: os.Getenv("COWORK_E2E_CMDLINE"),
		arch:    os.Getenv("COWORK_E2E_ARCH"),
	}
	if bin == "" || testGuest.kernel == "" || testGuest.disk == "" {
		fmt.Fprintln(os.Stderr, "e2e: run through `make e2e`, which builds the guest and sets COWORK_E2E_*")
		os.Exit(2)
	}
	os.Exit(m.Run())
}

// env is one isolated cowork home with its workspace.
type env struct {
	t         *testing.T
	home      string
	workspace string
	extraEnv  []string // more KEY=VALUE for every command
	// cred runs every command as another user (nil: as the test, root);
	// guest replaces testGuest then, with copies that user can read.
	cred  *syscall.Credential
	guest *guest
}

func newEnv(t *testing.T) *env {
	t.Helper()
	dir, err := os.MkdirTemp("", "cowork-e2e-") // short paths: unix sockets live under it
	if err != nil {
		t.Fatal(err)
	}
	e := &env{t: t, home: filepath.Join(dir, "home"), workspace: filepath.Join(dir, "ws")}
	t.Cleanup(func() {
		if t.Failed() { // what hostd saw, before delete takes it away
			logs, _ := filepath.Glob(filepath.Join(e.home, "*", "hostd.log"))
			for _, l := range logs {
				if b, err := os.ReadFile(l); err == nil {
					lines := strings.Split(strings.TrimSpace(string(b)), "\n")
					t.Logf("%s (last lines):\n%s", l, strings.Join(lines[max(0, len(lines)-40):], "\n"))
				}
			}
		}
		// Whatever a failed test left running goes too, under any name.
		e.run("delete", "--force")
		names, _ := filepath.Glob(filepath.Join(e.home, "*", "config.json"))
		for _, n := range names {
			e.run("--name", filepath.Base(filepath.Dir(n)), "delete", "--force")
		}
		e.reapLeftovers()
		if !t.Failed() {
			os.RemoveAll(dir)
		}
	})
	return e
}

// reapLeftovers waits a little for the processes of this env (a VM, its
// hostd, a pool's filler) to end once its instances are deleted, then
// kills those left, failing the test: `delete --force` must leave nothing
// running, and one left would slow every test after it.
func (e *env) reapLeftovers() {
	deadline := time.Now().Add(15 * time.Second)
	for {
		left := e.processes()
		if len(left) == 0 {
			return
		}
		if time.Now().After(deadline) {
			for pid, cmd := range left {
				e.t.Errorf("pid %d still running 15 s after the test's instances were deleted (killed now): %s", pid, cmd)
				syscall.Kill(pid, syscall.SIGKILL)
			}
			return
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// processes are those whose command line or environment names this
// env's folder, by pid.
func (e *env) processes() map[int]string {
	dir := filepath.Dir(e.home)
	out := map[int]string{}
	procs, _ := filepath.Glob("/proc/[0-9]*")
	for _, p := range procs {
		pid, err := strconv.Atoi(filepath.Base(p))
		if err != nil || pid == os.Getpid() {
			continue
		}
		cmdline, _ := os.ReadFile(filepath.Join(p, "cmdline"))
		environ, _ := os.ReadFile(filepath.Join(p, "environ"))
		if bytes.Contains(cmdline, []byte(dir+"/")) || bytes.Contains(environ, []byte("COWORK_HOME="+e.home+"\x00")) {
			out[pid] = strings.ReplaceAll(string(bytes.TrimRight(cmdline, "\x00")), "\x00", " ")
		}
	}
	return out
}

// result is what a cowork command did.
type result struct {
	code        int
	out, errOut string
}

func (r result) String() string {
	return fmt.Sprintf("exit %d\nstdout: %s\nstderr: %s", r.code, r.out, r.errOut)
}

// cmd prepares `cowork args...` in this env.
func (e *env) cmd(ctx context.Context, args ...string) *exec.Cmd {
	c := exec.CommandContext(ctx, bin, args...)
	c.Env = append(append(os.Environ(), "COWORK_HOME="+e.home, "COWORK_AGENT=", "NO_COLOR=1"), e.extraEnv...)
	if e.cred != nil {
		c.SysProcAttr = &syscall.SysProcAttr{Credential: e.cred}
	}
	return c
}

// run runs a cowork command to its end, with stdin if given.
func (e *env) run(args ...string) result { return e.runIn("", args...) }

func (e *env) runIn(stdin string, args ...string) result {
	// Long enough for the cloud stand-in's first init on a loaded
	// machine: provisioning, then the golden disk's capture and a boot.
	ctx, cancel := context.WithTimeout(context.Background(), 12*time.Minute)
	defer cancel()
	c := e.cmd(ctx, args...)
	var out, errOut bytes.Buffer
	c.Stdin, c.Stdout, c.Stderr = strings.NewReader(stdin), &out, &errOut
	err := c.Run()
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		e.t.Fatalf("cowork %q: %v", args, err)
	}
	return result{code, out.String(), errOut.String()}
}

// must runs a command that has to succeed.
func (e *env) must(args ...string) result {
	e.t.Helper()
	r := e.run(args...)
	if r.code != 0 {
		e.t.Fatalf("cowork %s failed: %s", strings.Join(args, " "), r)
	}
	return r
}

// initArgs creates an instance of the test guest.
func (e *env) initArgs(extra ...string) []string {
	g := testGuest
	if e.guest != nil {
		g = *e.guest
	}
	return append([]string{"init",
		"--arch", g.arch, "--cpus", "2", "--memory", "1GiB", "--disk", "2GiB",
		"--workspace", e.workspace, "--image", g.disk,
		"--kernel", g.kernel, "--initrd", g.initrd, "--cmdline", g.cmdline,
		"--timeout", "3m",
	}, extra...)
}

// instanceDir is where the named instance lives.
func (e *env) instanceDir(name string) string { return filepath.Join(e.home, name) }

// hostdsOf lists the pids of the `cowork-hostd run --name name` processes
// serving this env's COWORK_HOME, wherever they are in their life (a hostd
// still taking its lock included); other tests' instances do not count.
func (e *env) hostdsOf(name string) []int {
	var pids []int
	procs, _ := filepath.Glob("/proc/[0-9]*")
	for _, p := range procs {
		cmdline, err := os.ReadFile(filepath.Join(p, "cmdline"))
		if err != nil || !strings.Contains(string(cmdline), "\x00run\x00--name\x00"+name+"\x00") {
			continue
		}
		environ, err := os.ReadFile(filepath.Join(p, "environ"))
		if err != nil || !slices.Contains(strings.Split(string(environ), "\x00"), "COWORK_HOME="+e.home) {
			continue
		}
		if pid, err := strconv.Atoi(filepath.Base(p)); err == nil {
			pids = append(pids, pid)
		}
	}
	return pids
}

// processesOf lists the pids of processes whose command line mentions s.
func processesOf(s string) []string {
	out, _ := exec.Command("pgrep", "-f", s).Output()
	return strings.Fields(string(out))
}
