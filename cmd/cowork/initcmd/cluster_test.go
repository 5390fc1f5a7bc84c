package initcmd

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/coworkhq/cowork"
	"github.com/coworkhq/cowork/cmd/cowork/cmdutil"
	"github.com/coworkhq/cowork/cmd/cowork/iostreams"
	"github.com/coworkhq/cowork/hostd/instance"
	"github.com/coworkhq/cowork/internal/hostdwire"
	"github.com/coworkhq/cowork/units"
)

const containerDisk = "quay.io/containerdisks/ubuntu:22.04"

// kubeArgs are the flags of a kubevirt init of box in a fresh COWORK_HOME.
func kubeArgs(t *testing.T, more ...string) []string {
	t.Helper()
	home := t.TempDir()
	t.Setenv("COWORK_HOME", home)
	return append([]string{"--backend", "kubevirt", "--image", containerDisk, "--workspace", filepath.Join(home, "ws")}, more...)
}

// usageError runs Config and wants a usage error (exit 2) saying want.
func usageError(t *testing.T, args []string, want string) {
	t.Helper()
	_, _, err := parse(t, args...).Config()
	if cmdutil.ExitCode(err) != 2 || !strings.Contains(err.Error(), want) {
		t.Errorf("init %q: %v; want a usage error saying %q", args, err, want)
	}
}

func TestInitBackendFlags(t *testing.T) {
	o := parse(t, kubeArgs(t, "--context", "kind-cowork", "--namespace", "team-a")...)
	if o.Backend != "kubevirt" || o.Context != "kind-cowork" || o.Namespace != "team-a" {
		t.Fatalf("parsed %+v", o)
	}
	c, src, err := o.Config()
	if err != nil {
		t.Fatal(err)
	}
	want := instance.Cluster{Context: "kind-cowork", Namespace: "team-a", Image: containerDisk}
	if c.Backend != instance.BackendKubeVirt || c.Cluster == nil || *c.Cluster != want || src != (instance.Sources{}) || c.Image != "" {
		t.Errorf("config %+v, cluster %+v, sources %+v", c, c.Cluster, src)
	}

	// The namespace defaults; the memory is the cluster's, not this machine's.
	big := (instance.HostMemory()/units.GiB + 1) * units.GiB * 2
	c, _, err = parse(t, kubeArgs(t, "--memory", big.String())...).Config()
	if err != nil || c.Cluster.Namespace != instance.DefaultNamespace || c.Cluster.Context != "" || c.Memory != big {
		t.Errorf("no --namespace, --memory %s: %+v %v", big, c, err)
	}

	// A local init records no cluster.
	c, _, err = parse(t, "--workspace", t.TempDir(), "--no-start").Config()
	if err != nil || c.Backend != instance.BackendLocal || c.Cluster != nil {
		t.Errorf("a local init: %+v %v", c, err)
	}
}

// A kubevirt guest is amd64 unless --arch says otherwise, whatever this
// machine is: it runs on the cluster's nodes. A local one is this
// machine's.
func TestInitKubevirtArch(t *testing.T) {
	for _, c := range []struct {
		args []string
		want string
	}{
		{kubeArgs(t), "amd64"},
		{kubeArgs(t, "--arch", "arm64"), "arm64"},
		{[]string{"--workspace", t.TempDir()}, "arm64"},
	} {
		o := parse(t, c.args...)
		o.HostArch = func() string { return "arm64" }
		cfg, _, err := o.Config()
		if err != nil || cfg.Arch != c.want {
			t.Errorf("init %q on an arm64 machine: %+v %v; want arch %s", c.args, cfg, err, c.want)
		}
	}
}

// --context and --namespace need --backend kubevirt, which needs
// --image; an unknown backend is refused. Each is a usage error.
func TestInitBackendUsageErrors(t *testing.T) {
	ws := []string{"--workspace", t.TempDir()}
	usageError(t, append(ws, "--context", "kind-cowork"), "--context places the guest on a cluster: add --backend kubevirt")
	usageError(t, append(ws, "--namespace", "team-a"), "--namespace places the guest on a cluster: add --backend kubevirt")
	usageError(t, append(ws, "--backend", "local", "--context", "x", "--namespace", "y"), "--context and --namespace place the guest")
	usageError(t, append(ws, "--backend", "docker"), `--backend "docker": want local (this machine) or kubevirt`)
	usageError(t, append(ws, "--backend", "kubevirt"), "--backend kubevirt needs --image, a container disk")
	usageError(t, kubeArgs(t, "--namespace", "Team_A"), `--namespace "Team_A"`)
	args := kubeArgs(t)
	args[3] = "/var/lib/ubuntu.img"
	usageError(t, args, "on a cluster the image is a container disk reference")
}

// The flags that need this machine's disk, folders or network are
// refused with --backend kubevirt, each saying why.
func TestInitKubevirtRefusesLocalFlags(t *testing.T) {
	f := filepath.Join(t.TempDir(), "f")
	os.WriteFile(f, []byte("x"), 0o600)
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"--kernel", f, "--initrd", f}, "takes no --kernel, --initrd: the cluster boots the container disk"},
		{[]string{"--cmdline", "console=ttyS0"}, "takes no --cmdline"},
		{[]string{"--image-sha256", strings.Repeat("ab", 32)}, "takes no --image-sha256: pin the container disk by digest"},
		{[]string{"--no-golden"}, "takes no --no-golden"},
		{[]string{"--mount", t.TempDir()}, "takes no --mount: a cluster's guest cannot reach this machine's folders"},
		{[]string{"-p", "8080:80"}, "takes no --publish"},
		{[]string{"--ssh-agent"}, "takes no --ssh-agent: this machine's SSH agent is lent through its network stack, which a cluster's guest is not on"},
		{[]string{"--allow", "example.com", "--network-mode", "allowlist"}, "takes no --network-mode, --allow: the guest's traffic leaves through its namespace's egress proxy"},
		{[]string{"--allow-host-port", "5432"}, "takes no --allow-host-port"},
		{[]string{"--upstream-proxy", "http://proxy:3128"}, "takes no --upstream-proxy"},
		{[]string{"--max-flows", "10"}, "takes no --max-flows"},
	} {
		usageError(t, kubeArgs(t, c.args...), "--backend kubevirt "+c.want)
	}
}

// kubeDaemon makes $COWORK_HOSTD_KUBEVIRT a script that records its
// arguments and exits 1 (a start that fails), and $COWORK_HOSTD one that
// is not there: a kubevirt init asks it nothing (no download, no
// inspection, no disk).
func kubeDaemon(t *testing.T) (args string) {
	t.Helper()
	dir := t.TempDir()
	bin, args := filepath.Join(dir, instance.KubeVirtHostd), filepath.Join(dir, "args")
	script := "#!/bin/sh\necho \"$@\" >> " + args + "\necho 'cannot reach the cluster' >&2\nexit 1\n"
	if err := os.WriteFile(bin, []byte(script), 0o700); err != nil {
		t.Fatal(err)
	}
	t.Setenv(cowork.KubeVirtHostdEnv, bin)
	t.Setenv(hostdwire.Env, filepath.Join(dir, "no-cowork-hostd"))
	return args
}

// A kubevirt init writes the instance (its config, nothing else: no
// image, disk or seed) and starts it with cowork-hostd-kubevirt. A start
// that fails keeps what init wrote, and the next init resumes it.
func TestInitKubevirtCreatesAndStarts(t *testing.T) {
	args := kubeArgs(t, "--context", "kind-cowork", "--namespace", "team-a", "--timeout", "20s")
	ran := kubeDaemon(t)
	ios, _, _, errOut := iostreams.Test()
	o := parse(t, args...)
	o.IO = ios
	o.HostArch = func() string { return "arm64" }
	err := run(context.Background(), o)
	if err == nil || !strings.Contains(err.Error(), "hostd exited") || !strings.Contains(err.Error(), "cannot reach the cluster") {
		t.Fatalf("init whose start fails: %v\n%s", err, errOut)
	}
	if !strings.Contains(errOut.String(), "Creating box on a cluster (kubevirt, namespace team-a of context kind-cowork; amd64, 4 CPUs") {
		t.Errorf("stderr:\n%s", errOut)
	}
	if b, _ := os.ReadFile(ran); string(b) != "run --name box\n" {
		t.Errorf("cowork-hostd-kubevirt ran with %q, want run --name box", b)
	}
	saved, err := instance.Load("box")
	if err != nil {
		t.Fatalf("the failed start lost the instance: %v", err)
	}
	want := instance.Cluster{Context: "kind-cowork", Namespace: "team-a", Image: containerDisk}
	if saved.Backend != instance.BackendKubeVirt || saved.Cluster == nil || *saved.Cluster != want || saved.DiskFormat != "" || saved.Image != "" {
		t.Errorf("saved %+v, cluster %+v", saved, saved.Cluster)
	}
	p, _ := instance.PathsFor("box")
	entries, _ := os.ReadDir(p.Dir())
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
	}
	if strings.Join(names, " ") != "config.json hostd.log" {
		t.Errorf("the instance's directory holds %v; want its config and its daemon's log", names)
	}
	home := filepath.Dir(p.Dir())
	if _, err := os.Stat(filepath.Join(home, instance.CacheDir)); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("a kubevirt init used the cache: %v", err)
	}

	// The same init again resumes it: started again, settings kept.
	ios, _, _, errOut = iostreams.Test()
	o = parse(t, args...)
	o.IO = ios
	if err := run(context.Background(), o); err == nil || !strings.Contains(errOut.String(), "Resuming the interrupted init of box") {
		t.Fatalf("init again: %v\n%s", err, errOut)
	}
	if b, _ := os.ReadFile(ran); string(b) != "run --name box\nrun --name box\n" {
		t.Errorf("cowork-hostd-kubevirt ran with %q", b)
	}
	// Another namespace is refused rather than ignored.
	o = parse(t, append(args, "--namespace", "team-b")...)
	o.IO = ios
	if err := run(context.Background(), o); err == nil || !strings.Contains(err.Error(), "differ in --namespace;") {
		t.Errorf("init with another namespace: %v", err)
	}
}

// --no-start writes the instance and starts nothing.
func TestInitKubevirtNoStart(t *testing.T) {
	args := kubeArgs(t, "--no-start")
	ran := kubeDaemon(t)
	ios, _, _, errOut := iostreams.Test()
	o := parse(t, args...)
	o.IO = ios
	if err := run(context.Background(), o); err != nil {
		t.Fatalf("%v\n%s", err, errOut)
	}
	if !strings.Contains(errOut.String(), "created box; start it with `cowork start --name box`") {
		t.Errorf("stderr:\n%s", errOut)
	}
	if _, err := os.Stat(ran); err == nil {
		t.Error("--no-start started the instance")
	}
	if c, err := instance.Load("box"); err != nil || c.Cluster == nil || c.Cluster.Namespace != instance.DefaultNamespace {
		t.Errorf("saved %+v %v", c, err)
	}
}
