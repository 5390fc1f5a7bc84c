package root

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/coworkhq/cowork/hostd/instance"
	"github.com/coworkhq/cowork/hostd/instance/instancetest"
	"github.com/coworkhq/cowork/internal/hostdwire"
	"github.com/coworkhq/cowork/units"
)

// Each command that needs the guest on this machine refuses an instance
// whose guest runs on a cluster: exit 1, one line saying where it runs
// and what it cannot do, and nothing done (the running stand-in daemon
// is asked for nothing, no file is made or changed).
func TestClusterInstanceRefusesLocalOnlyCommands(t *testing.T) {
	p, _ := instancetest.New(t, instance.Config{
		Name: instance.DefaultName, CPUs: 1, Memory: units.GiB, Disk: units.GiB, Arch: "amd64", Boot: instance.BootEFI,
		Backend: instance.BackendKubeVirt,
		Cluster: &instance.Cluster{Namespace: "team-a", Image: "quay.io/containerdisks/ubuntu:22.04"},
	})
	h := instancetest.Running(t, p, true)
	t.Setenv("COWORK_AGENT", "")
	t.Setenv("ANTHROPIC_API_KEY", "sk-test")
	t.Setenv(hostdwire.Env, filepath.Join(t.TempDir(), "never-run"))
	before, _ := os.ReadFile(p.Config())
	mnt := t.TempDir()
	const policyFile = "mode: allowlist\nallow example.com\n"
	proposal := filepath.Join(t.TempDir(), "proposal.txt")
	os.WriteFile(proposal, []byte(policyFile), 0o600)
	for _, c := range []struct {
		args  []string
		want  string
		stdin string
	}{
		{[]string{"suspend"}, "cannot be suspended: its memory would be saved on this machine; `cowork stop` stops it", ""},
		{[]string{"stop", "--suspend"}, "cannot be suspended", ""},
		{[]string{"snapshot", "create", "s1"}, "cannot have snapshots", ""},
		{[]string{"snapshot", "restore", "s1"}, "cannot have snapshots", ""},
		{[]string{"clone", "sandbox", "copy"}, "cannot be cloned", ""},
		{[]string{"clone", "sandbox", "copy", "--snapshot", "s1"}, "cannot be cloned", ""},
		{[]string{"pool", "fill", "--size", "2"}, "cannot have a pool of clones", ""},
		{[]string{"pool", "ls"}, "cannot have a pool of clones", ""},
		{[]string{"pool", "drain"}, "cannot have a pool of clones", ""},
		{[]string{"start", "--mount", mnt + ":/data"}, "cannot mount this machine's folders; `cowork cp` copies files in and out", ""},
		{[]string{"port", "publish", "8080"}, "cannot publish ports here", ""},
		{[]string{"port", "publish", "--auto"}, "cannot publish ports here", ""},
		{[]string{"disk", "resize", "20GiB", "--yes"}, "cannot be resized here", ""},
		{[]string{"policy", "allow", "example.com"}, "cannot take a network policy of its own", ""},
		{[]string{"policy", "mode", "allowlist"}, "cannot take a network policy of its own", ""},
		{[]string{"audit", "verify"}, "cannot have its audit log verified here", ""},
		{[]string{"start", "--ssh-agent"}, "cannot use this machine's SSH agent", ""},
		// Refused before the value is read, and before the name is looked up.
		{[]string{"secret", "set", "GH_TOKEN", "--host", "github.com"}, "cannot use this machine's secrets: only this machine's network stack swaps their placeholders, and the guest is not on it", ""},
		{[]string{"secret", "set", "GH_TOKEN", "--host", "github.com"}, "cannot use this machine's secrets", "ghp_value\n"},
		{[]string{"secret", "rm", "GH_TOKEN"}, "cannot use this machine's secrets", ""},
		// Every policy command, before it reads, shows or parses anything.
		{[]string{"policy"}, "cannot take a network policy of its own", ""},
		{[]string{"policy", "--json"}, "cannot take a network policy of its own", ""},
		{[]string{"policy", "suggest"}, "cannot take a network policy of its own", ""},
		{[]string{"policy", "suggest", "--json", "--since", "1h"}, "cannot take a network policy of its own", ""},
		{[]string{"policy", "learn", "--for", "1m"}, "cannot take a network policy of its own", ""},
		{[]string{"policy", "learn", "--", "true"}, "cannot take a network policy of its own", ""},
		{[]string{"policy", "apply", "--from", proposal, "--yes"}, "cannot take a network policy of its own", ""},
		{[]string{"policy", "apply", "--from", "-", "--yes"}, "cannot take a network policy of its own", policyFile},
		{[]string{"policy", "apply", "--from", filepath.Join(mnt, "missing.txt")}, "cannot take a network policy of its own", ""},
		{[]string{"policy", "budget", "--daily-cost", "20"}, "cannot take a network policy of its own", ""},
		{[]string{"policy", "budget", "--daily-tokens", "lots"}, "cannot take a network policy of its own", ""},
		{[]string{"policy", "budget", "off"}, "cannot take a network policy of its own", ""},
		{[]string{"policy", "remove", "nothing.example"}, "cannot take a network policy of its own", ""},
	} {
		r := cowork(t, c.stdin, c.args...)
		line := "cowork: instance sandbox runs on a cluster (kubevirt, namespace team-a); it "
		if r.code != 1 || !strings.HasPrefix(r.errOut, line) || !strings.Contains(r.errOut, c.want) ||
			strings.Count(r.errOut, "\n") != 1 || r.out != "" {
			t.Errorf("cowork %s: exit %d, stdout %q, stderr %q; want exit 1 and one line saying %q",
				strings.Join(c.args, " "), r.code, r.out, r.errOut, c.want)
		}
	}
	// A throwaway run clones the instance's disk in the cluster, which
	// it does only while no VM uses it: refused while it runs. ask's
	// asks for no key of this machine's (the namespace's relay has one).
	t.Setenv("ANTHROPIC_API_KEY", "")
	for _, args := range [][]string{{"exec", "--rm", "true"}, {"ask", "--rm", "hello"}, {"fleet", "ask", "--count", "2", "hello"}} {
		r := cowork(t, "", args...)
		if r.code != 1 || r.errOut != "cowork: stop sandbox first (`cowork stop`): the cluster clones its disk only while no VM uses it\n" || r.out != "" {
			t.Errorf("cowork %s: exit %d, stdout %q, stderr %q; want the running instance refused", strings.Join(args, " "), r.code, r.out, r.errOut)
		}
	}
	// A new instance on a cluster takes no --ssh-agent: a usage error.
	r := cowork(t, "", "--name", "other", "init", "--backend", "kubevirt", "--image", "quay.io/containerdisks/ubuntu:22.04",
		"--workspace", t.TempDir(), "--no-start", "--ssh-agent")
	if r.code != 2 || !strings.Contains(r.errOut, "--backend kubevirt takes no --ssh-agent: this machine's SSH agent is lent through its network stack") {
		t.Errorf("init --backend kubevirt --ssh-agent: exit %d, stderr %q", r.code, r.errOut)
	}
	if s, st := h.Suspends(), h.Stops(); len(s) != 0 || len(st) != 0 {
		t.Errorf("the daemon was asked to suspend %v, to stop %v", s, st)
	}
	if after, _ := os.ReadFile(p.Config()); string(after) != string(before) {
		t.Errorf("the config changed:\n%s", after)
	}
	for _, f := range []string{p.Pool(), p.Snapshots(), filepath.Join(filepath.Dir(p.Dir()), "copy")} {
		if _, err := os.Stat(f); err == nil {
			t.Errorf("%s was made", f)
		}
	}
}
