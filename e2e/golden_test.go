//go:build e2e

package e2e

import (
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
)

// goldenDisk is a row of `cowork image ls --json`.
type goldenDisk struct {
	Key   string   `json:"key"`
	Size  int64    `json:"size"`
	Users []string `json:"users"`
}

func (e *env) goldenDisks() []goldenDisk {
	e.t.Helper()
	r := e.must("image", "ls", "--json")
	var out []goldenDisk
	if err := json.Unmarshal([]byte(r.out), &out); err != nil {
		e.t.Fatalf("image ls --json: %v\n%s", err, r)
	}
	return out
}

// checkGoldenClone follows TestCloudInitProvisionsTheGuest: its init
// provisioned the default instance and kept the disk as a golden disk. A
// second instance of the same image and provisioning is cloned from it:
// no provisioning, the packages there, its own machine-id and ssh host
// keys, its own larger disk; the golden disk cannot be removed while an
// instance is on it, and prune frees it once none is.
func checkGoldenClone(t *testing.T, e *env, initOut string, args []string) {
	if !strings.Contains(initOut, "kept (") {
		t.Fatalf("the first init did not keep a golden disk:\n%s", initOut)
	}
	ls := e.goldenDisks()
	if len(ls) != 1 || !slices.Equal(ls[0].Users, []string{"sandbox"}) {
		t.Fatalf("golden disks after the first init: %+v", ls)
	}
	key := ls[0].Key[:12]

	b := func(args ...string) []string { return append([]string{"--name", "b"}, args...) }
	t.Cleanup(func() { e.run(b("delete", "--force")...) })
	r := e.must(b(append(args, "--disk", "4GiB")...)...)
	if !strings.Contains(r.errOut, "golden    "+key+": cloning") || strings.Contains(r.errOut, "provisioning the guest") {
		t.Errorf("the second init did not clone the golden disk, or provisioned:\n%s", r.errOut)
	}
	if _, err := os.Stat(filepath.Join(e.instanceDir("b"), "disk.qcow2")); err != nil {
		t.Errorf("b's disk is no overlay: %v", err)
	}
	var st struct {
		Golden     string `json:"golden"`
		DiskFormat string `json:"disk_format"`
	}
	if r := e.must(b("status", "--json")...); json.Unmarshal([]byte(r.out), &st) != nil || st.Golden != ls[0].Key || st.DiskFormat != "qcow2" {
		t.Errorf("b's status does not name its golden disk: %s", r.out)
	}
	rootOn := func(name, script string) string {
		return e.run("--name", name, "exec", "-u", "root", script).out
	}
	if out := rootOn("b", "command -v tree >/dev/null && test -f /var/lib/cowork/provisioned && echo provisioned"); out != "provisioned\n" {
		t.Errorf("b lacks what a's provisioning installed: %q", out)
	}
	// cloud-init took b as a new instance, and ran its per-instance
	// modules (the ssh host keys below). Its status is no measure: the
	// stand-in lacks locales, so its locale module fails on every first
	// boot, a's included. Its network stage (cloud-init.service, which
	// makes the ssh host keys) is what counts here: the config and final
	// stages take another minute of emulated Python and change none of it.
	waitNetworkStage := `for i in $(seq 300); do [ "$(systemctl is-active cloud-init.service)" = active ] && break; sleep 1; done; cloud-init query instance_id`
	if out := rootOn("b", waitNetworkStage); !strings.HasPrefix(out, "cowork-b-") {
		t.Errorf("cloud-init's instance on b: %q", out)
	}
	ident := "cat /etc/machine-id; sha256sum </etc/ssh/ssh_host_ed25519_key.pub"
	idA, idB := rootOn("sandbox", ident), rootOn("b", ident)
	for i, what := range []string{"machine-id", "ssh host key"} {
		la, lb := strings.Split(idA, "\n"), strings.Split(idB, "\n")
		if len(la) < 2 || len(lb) < 2 || la[i] == "" || la[i] == lb[i] {
			t.Errorf("the clone shares its %s with the instance it came from: a %q, b %q", what, idA, idB)
		}
	}
	if out := rootOn("b", "df --output=size -B1M / | tail -1"); true {
		if mb, _ := strconv.Atoi(strings.TrimSpace(out)); mb < 3500 {
			t.Errorf("b's root file system did not grow to its 4 GiB disk: %q MiB", out)
		}
	}

	if ls := e.goldenDisks(); len(ls) != 1 || !slices.Equal(ls[0].Users, []string{"b", "sandbox"}) {
		t.Errorf("golden disk users with two clones: %+v", ls)
	}
	if r := e.run("image", "rm", key); r.code != 1 || !strings.Contains(r.errOut, "b, sandbox") {
		t.Errorf("image rm of a golden disk in use: %s", r)
	}
	if r := e.must("image", "prune", "--force"); !strings.Contains(r.errOut, "0 golden disks removed") {
		t.Errorf("prune with the golden disk in use: %s", r)
	}
	checkClone(t, e, ls[0].Key)
	e.must(b("delete", "--force")...)
	e.must("delete", "--force")
	if r := e.must("image", "prune", "--force"); !strings.Contains(r.out, "removed "+key) {
		t.Errorf("prune once no instance uses it: %s", r)
	}
	if ls := e.goldenDisks(); len(ls) != 0 {
		t.Errorf("golden disks after prune: %+v", ls)
	}
}

// checkClone: `cowork clone` of the stopped clone b makes c, on the same
// golden disk, as an instance of its own: another cloud-init instance-id,
// which is what made b take new identities above (a cloud-init guest boots
// as a new instance, so c is not booted here: that costs two minutes of an
// emulated cloud-init). b is untouched.
func checkClone(t *testing.T, e *env, key string) {
	e.must("--name", "b", "stop")
	t.Cleanup(func() { e.run("--name", "c", "delete", "--force") })
	if r := e.run("clone", "b", "b"); r.code == 0 {
		t.Errorf("clone onto an existing instance: %s", r)
	}
	r := e.must("clone", "b", "c")
	if !strings.Contains(r.errOut, "c cloned from b") {
		t.Errorf("clone's progress:\n%s", r.errOut)
	}
	var cfgB, cfgC struct {
		InstanceID string `json:"instance_id"`
	}
	for name, cfg := range map[string]any{"b": &cfgB, "c": &cfgC} {
		b, err := os.ReadFile(filepath.Join(e.instanceDir(name), "config.json"))
		if err != nil || json.Unmarshal(b, cfg) != nil {
			t.Fatalf("%s's config: %v", name, err)
		}
	}
	if !strings.HasPrefix(cfgC.InstanceID, "cowork-c-") || cfgC.InstanceID == cfgB.InstanceID {
		t.Errorf("c's cloud-init instance-id %q (b's %q)", cfgC.InstanceID, cfgB.InstanceID)
	}
	if ls := e.goldenDisks(); len(ls) != 1 || !slices.Equal(ls[0].Users, []string{"b", "c", "sandbox"}) || ls[0].Key[:12] != key[:12] {
		t.Errorf("golden disk users after the clone: %+v", ls)
	}
	if r := e.must("--name", "b", "status", "--json"); !strings.Contains(r.out, `"state": "stopped"`) {
		t.Errorf("b after the clone: %s", r.out)
	}
	e.must("--name", "c", "delete", "--force")
}
