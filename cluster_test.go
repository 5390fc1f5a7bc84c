package cowork

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/coworkhq/cowork/hostd/instance"
	"github.com/coworkhq/cowork/hostd/instance/instancetest"
	"github.com/coworkhq/cowork/internal/hostdwire"
	"github.com/coworkhq/cowork/units"
)

// kubevirtConfig is the config of the instance box on a cluster.
func kubevirtConfig() instance.Config {
	return instance.Config{
		Name: "box", CPUs: 1, Memory: units.GiB, Disk: units.GiB, Arch: "amd64", Boot: instance.BootEFI,
		Backend: instance.BackendKubeVirt,
		Cluster: &instance.Cluster{Context: "kind-cowork", Namespace: "team-a", Image: "quay.io/containerdisks/ubuntu:22.04"},
	}
}

// recorder writes a script named bin in a fresh folder that appends its
// arguments to a file and exits with code; it returns the script and the
// file.
func recorder(t *testing.T, bin string, code string) (script, args string) {
	t.Helper()
	dir := t.TempDir()
	script, args = filepath.Join(dir, bin), filepath.Join(dir, "args")
	body := "#!/bin/sh\necho \"$@\" >> " + args + "\necho 'no cluster here' >&2\nexit " + code + "\n"
	if err := os.WriteFile(script, []byte(body), 0o700); err != nil {
		t.Fatal(err)
	}
	return script, args
}

func TestKubeVirtHostdLookup(t *testing.T) {
	dir := t.TempDir()
	t.Setenv(KubeVirtHostdEnv, filepath.Join(dir, "missing"))
	if _, err := KubeVirtHostdBinary(); err == nil || !strings.Contains(err.Error(), "$"+KubeVirtHostdEnv) {
		t.Errorf("a $%s that does not exist: %v", KubeVirtHostdEnv, err)
	}
	t.Setenv(KubeVirtHostdEnv, "")
	t.Setenv("PATH", dir)
	_, err := KubeVirtHostdBinary()
	if err == nil || !strings.Contains(err.Error(), "cowork-hostd-kubevirt is not installed") || !strings.Contains(err.Error(), "`make kubevirt` builds it into bin/") {
		t.Errorf("no cowork-hostd-kubevirt anywhere: %v", err)
	}
	want, _ := recorder(t, instance.KubeVirtHostd, "0")
	t.Setenv("PATH", filepath.Dir(want))
	if got, err := KubeVirtHostdBinary(); err != nil || got != want {
		t.Errorf("on PATH: %q %v, want %q", got, err, want)
	}

	// Beside the running program, through a symlink to it, before PATH.
	exe := filepath.Join(filepath.Dir(want), "cowork")
	os.WriteFile(exe, []byte("#!/bin/sh\n"), 0o700)
	link := filepath.Join(t.TempDir(), "cowork")
	os.Symlink(exe, link)
	t.Setenv("PATH", t.TempDir())
	if got, err := kubevirtHostd.findFrom("", link); err != nil || got != want {
		t.Errorf("beside %s: %q %v, want %q", link, got, err, want)
	}
}

// A start launches the daemon of the instance's backend, with the same
// command line: cowork-hostd-kubevirt for a guest on a cluster,
// cowork-hostd otherwise. (The stand-ins exit at once: the start fails.)
func TestStartLaunchesTheBackendsDaemon(t *testing.T) {
	for _, kube := range []bool{true, false} {
		cfg := kubevirtConfig()
		if !kube {
			cfg.Backend, cfg.Cluster = instance.BackendLocal, nil
		}
		instancetest.New(t, cfg)
		kubeBin, kubeArgs := recorder(t, instance.KubeVirtHostd, "1")
		localBin, localArgs := recorder(t, hostdwire.Binary, "1")
		t.Setenv(KubeVirtHostdEnv, kubeBin)
		t.Setenv(hostdwire.Env, localBin)
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		err := Start(ctx, "", "box", nil)
		cancel()
		if err == nil || !strings.Contains(err.Error(), "hostd exited") {
			t.Fatalf("kubevirt %v: start with a daemon that exits: %v", kube, err)
		}
		ran, other := kubeArgs, localArgs
		if !kube {
			ran, other = localArgs, kubeArgs
		}
		if b, _ := os.ReadFile(ran); string(b) != "run --name box\n" {
			t.Errorf("kubevirt %v: the daemon ran with %q, want run --name box", kube, b)
		}
		if _, err := os.Stat(other); err == nil {
			t.Errorf("kubevirt %v: the other backend's daemon ran too", kube)
		}
	}
}

// Without cowork-hostd-kubevirt, a kubevirt instance's start says how to
// get it, and launches nothing else.
func TestStartWithoutTheKubeVirtDaemon(t *testing.T) {
	instancetest.New(t, kubevirtConfig())
	localBin, localArgs := recorder(t, hostdwire.Binary, "1")
	t.Setenv(hostdwire.Env, localBin)
	t.Setenv(KubeVirtHostdEnv, "")
	t.Setenv("PATH", t.TempDir())
	err := Start(context.Background(), "", "box", nil)
	if err == nil || !strings.Contains(err.Error(), "`make kubevirt`") {
		t.Fatalf("start: %v", err)
	}
	if _, err := os.Stat(localArgs); err == nil {
		t.Error("cowork-hostd was launched for a kubevirt instance")
	}
}

// What needs the guest on this machine is refused for one on a cluster,
// by a *LocalOnlyError saying where it runs, before anything changes.
func TestLocalOnlyRefusesAClusterInstance(t *testing.T) {
	inst := openNew(t, kubevirtConfig())
	h := instancetest.Running(t, inst.Paths, true)
	ctx := context.Background()
	for _, c := range []struct {
		what string
		do   func() error
		want string
	}{
		{"suspend", func() error { _, err := inst.Suspend(ctx, false); return err }, "cannot be suspended: its memory would be saved on this machine; `cowork stop --name box` stops it"},
		{"snapshot", func() error { _, err := inst.Snapshot("s"); return err }, "cannot have snapshots"},
		{"restore", func() error { _, err := inst.RestoreSnapshot("s", true); return err }, "cannot have snapshots"},
		{"clone", func() error { _, err := inst.Clone("copy", ""); return err }, "cannot be cloned"},
		{"clone a snapshot", func() error { _, err := inst.CloneSnapshot("s", "copy", ""); return err }, "cannot be cloned"},
		{"pool settings", func() error { return inst.SetPoolSettings(PoolSettings{Size: 2}) }, "cannot have a pool"},
		{"fill the pool", func() error { _, err := inst.FillPool(ctx, nil); return err }, "cannot have a pool"},
		{"mounts", func() error {
			_, err := inst.SetMounts([]Mount{{Host: t.TempDir(), Guest: "/data"}}, false)
			return err
		}, "cannot mount this machine's folders"},
		{"publish", func() error { _, err := inst.Publish(ctx, "127.0.0.1:0", 80); return err }, "cannot publish ports here"},
		{"publish udp", func() error { _, err := inst.PublishUDP(ctx, "127.0.0.1:0", 53); return err }, "cannot publish ports here"},
		{"auto publish", func() error { return inst.AutoPublish(ctx, true) }, "cannot publish ports here"},
		{"resize", func() error { _, err := inst.Resize(2 * units.GiB); return err }, "cannot be resized here"},
		{"verify the audit log", func() error { _, err := inst.VerifyAudit(ctx); return err }, "cannot have its audit log verified here"},
	} {
		err := c.do()
		var lo *LocalOnlyError
		if !errors.As(err, &lo) || !strings.Contains(err.Error(), "instance box runs on a cluster (kubevirt, namespace team-a, context kind-cowork); it ") ||
			!strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: %v; want a *LocalOnlyError saying %q", c.what, err, c.want)
		}
	}
	if s := h.Suspends(); len(s) != 0 {
		t.Errorf("the daemon was asked to suspend: %v", s)
	}
	for _, f := range []string{inst.Paths.Pool(), inst.Paths.Snapshots(), filepath.Join(filepath.Dir(inst.Paths.Dir()), "copy")} {
		if _, err := os.Stat(f); err == nil {
			t.Errorf("%s was made", f)
		}
	}
	if cfg, _ := instance.Load("box"); len(cfg.Mounts) != 0 || cfg.Disk != units.GiB {
		t.Errorf("the config changed: %+v", cfg)
	}

	local := kubevirtConfig()
	local.Backend, local.Cluster = instance.BackendLocal, nil
	if err := localOnly(&local, OpSuspend); err != nil {
		t.Errorf("a local instance: %v", err)
	}
}

// A kubevirt instance is made without a disk: its directory holds its
// config, with where it runs. It is made from no local source.
func TestCreateAClusterInstance(t *testing.T) {
	t.Setenv("COWORK_HOME", t.TempDir())
	t.Setenv(hostdwire.Env, filepath.Join(t.TempDir(), "no-hostd")) // nothing may ask it
	cfg := kubevirtConfig()
	cfg.Workspace = filepath.Join(t.TempDir(), "ws")
	inst, err := Create(context.Background(), &cfg, instance.Sources{}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if inst.Config.Backend != instance.BackendKubeVirt || *inst.Config.Cluster != *cfg.Cluster || inst.Config.DiskFormat != "" {
		t.Errorf("saved %+v", inst.Config)
	}
	entries, _ := os.ReadDir(inst.Paths.Dir())
	if len(entries) != 1 || entries[0].Name() != "config.json" {
		t.Errorf("the instance's directory holds %v, want config.json only", entries)
	}
	if err := inst.Resume(); err != nil {
		t.Errorf("resume of an unprovisioned kubevirt instance: %v", err)
	}

	cfg2 := kubevirtConfig()
	cfg2.Name, cfg2.Workspace = "other", cfg.Workspace
	if _, err := Create(context.Background(), &cfg2, instance.Sources{Image: "/tmp/img.raw"}, nil); err == nil {
		t.Error("a kubevirt instance made from a local image")
	}
}

// A session of a cluster's instance carries no credential of this
// machine's: its relay uses the namespace's Secret. A local instance
// still needs one, and says so without.
func TestClusterSessionsCarryNoLocalKey(t *testing.T) {
	env := map[string]string{"ANTHROPIC_API_KEY": "sk-laptop", "ANTHROPIC_BASE_URL": "https://elsewhere.example"}
	remote := kubevirtConfig()
	cred, err := CredentialFor(&remote, func(k string) string { return env[k] })
	if err != nil || cred != (Credential{Endpoint: "https://elsewhere.example"}) {
		t.Errorf("a cluster instance's credential: %+v, %v; want its endpoint alone, for the relay to refuse", cred, err)
	}
	// A gateway's password or token in the URL stays here too.
	env["ANTHROPIC_BASE_URL"] = "https://user:gwtoken@gw.example/anthropic?key=s3cret"
	if cred, _ := CredentialFor(&remote, func(k string) string { return env[k] }); strings.Contains(cred.Endpoint, "gwtoken") || strings.Contains(cred.Endpoint, "s3cret") || !strings.Contains(cred.Endpoint, "gw.example/anthropic") {
		t.Errorf("a cluster instance's endpoint: %q, want it without its secrets", cred.Endpoint)
	}
	if cred, _ := CredentialFor(&remote, func(string) string { return "" }); cred != (Credential{}) {
		t.Errorf("a cluster instance's credential without a base URL: %+v", cred)
	}
	local := kubevirtConfig()
	local.Backend, local.Cluster = instance.BackendLocal, nil
	if cred, err := CredentialFor(&local, func(k string) string { return env[k] }); err != nil || cred.APIKey != "sk-laptop" {
		t.Errorf("a local instance's credential: %+v, %v", cred, err)
	}
	if _, err := CredentialFor(&local, func(string) string { return "" }); err == nil || !strings.Contains(err.Error(), "ANTHROPIC_API_KEY") {
		t.Errorf("a local instance without a key: %v", err)
	}
}
