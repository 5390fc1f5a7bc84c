package image

import (
	"crypto/sha256"
	"encoding/hex"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"gopkg.in/yaml.v3"

	"github.com/coworkhq/cowork/internal/agentwire"
)

// bootFiles runs the user-data's bootcmd through its file-writing part
// only: it returns each file the bootcmd writes, by guest path.
func bootFiles(t *testing.T, g Guest) (bootcmd string, files map[string]string) {
	t.Helper()
	ud, err := UserData(g)
	if err != nil {
		t.Fatal(err)
	}
	var cfg struct {
		Bootcmd []string `yaml:"bootcmd"`
		Runcmd  any      `yaml:"runcmd"`
		Pkgs    any      `yaml:"packages"`
	}
	if err := yaml.Unmarshal(ud, &cfg); err != nil {
		t.Fatal(err)
	}
	// The install script, the identity script, then the grub console
	// drop-in (console.go).
	if len(cfg.Bootcmd) != 3 {
		t.Fatalf("bootcmd %q", cfg.Bootcmd)
	}
	// cloud-init's per-instance modules would not rerun after a cut boot.
	if cfg.Runcmd != nil || cfg.Pkgs != nil {
		t.Errorf("provisioning through runcmd or packages: %v %v", cfg.Runcmd, cfg.Pkgs)
	}
	re := regexp.MustCompile(`(?s)cat >(\S+)\.new <<'` + heredocTag + `'\n(.*?)\n` + heredocTag + `\n`)
	files = map[string]string{}
	for _, m := range re.FindAllStringSubmatch(cfg.Bootcmd[0], -1) {
		files[m[1]] = m[2] + "\n"
	}
	return cfg.Bootcmd[0], files
}

func TestBootScriptsAreShell(t *testing.T) {
	sh, err := exec.LookPath("sh")
	if err != nil {
		t.Skip("no sh")
	}
	cluster := testGuest()
	cluster.ShareTag, cluster.AgentURL, cluster.AgentSum = "", "http://10.96.7.8:7890/cowork-agent/linux-amd64", strings.Repeat("ab", 32)
	bootcmd, files := bootFiles(t, testGuest())
	clusterBoot, _ := bootFiles(t, cluster)
	scripts := map[string]string{"bootcmd": bootcmd, "a cluster guest's bootcmd": clusterBoot, "agent-update": files[agentUpdatePath], "provision": files[ProvisionScript]}
	for name, s := range scripts {
		if s == "" {
			t.Errorf("%s: missing", name)
			continue
		}
		p := filepath.Join(t.TempDir(), name)
		os.WriteFile(p, []byte(s), 0o600)
		if out, err := exec.Command(sh, "-n", p).CombinedOutput(); err != nil {
			t.Errorf("%s: sh -n: %v\n%s", name, err, out)
		}
	}
}

func TestAgentUnitInstallsTheAgentBeforeItStarts(t *testing.T) {
	bootcmd, files := bootFiles(t, testGuest())
	unit := files[unitDir+AgentUnit]
	pre := strings.Index(unit, "\nExecStartPre=-"+agentUpdatePath+"\n")
	start := strings.Index(unit, "\nExecStart="+AgentPath+" ")
	if pre < 0 || start < 0 || pre > start {
		t.Errorf("the agent unit does not update the agent before it starts:\n%s", unit)
	}
	// Restarted however often it fails: systemd's start limit (5 in 10 s)
	// would leave the guest without its agent for good.
	if unitSection(unit, "Unit")["StartLimitIntervalSec"] != "0" || unitSection(unit, "Service")["Restart"] != "always" {
		t.Errorf("the agent unit can give up restarting:\n%s", unit)
	}
	if !strings.Contains(unit, "Restart=always") || !strings.Contains(unit, "--provisioned-marker "+agentwire.ProvisionedMarker) {
		t.Errorf("agent unit:\n%s", unit)
	}
	update := files[agentUpdatePath]
	for _, want := range []string{
		"read -r sum size <" + agentSumPath,
		"[ \"$(stat -c %s " + AgentPath + ")\" = \"$size\" ]",
		"echo \"$want $(stat -c %s " + AgentPath + ")\" >" + agentSumPath + ".new\n  mv " + agentSumPath + ".new " + agentSumPath + "\n",
		CIDataSumName,
		"from=\"$src/" + CIDataAgentName + "\"",
		"install -m 0755 \"$from\" " + AgentPath + ".new\n  mv " + AgentPath + ".new " + AgentPath + "\n",
	} {
		if !strings.Contains(update, want) {
			t.Errorf("agent-update lacks %q:\n%s", want, update)
		}
	}
	// The bootcmd installs nothing itself: it restarts a changed unit, and
	// starts the provisioning after the agent's unit is in place.
	if strings.Contains(bootcmd, "install -m") && !strings.Contains(bootcmd, "cat >"+agentUpdatePath) {
		t.Error("the bootcmd installs the agent outside the unit")
	}
	reload := strings.Index(bootcmd, "systemctl daemon-reload")
	restart := strings.Index(bootcmd, "systemctl restart --no-block "+AgentUnit)
	prov := strings.Index(bootcmd, "systemctl start --no-block "+agentwire.ProvisionUnit)
	if reload < 0 || restart < reload || prov < restart {
		t.Errorf("bootcmd order: reload %d, agent %d, provision %d", reload, restart, prov)
	}
}

func TestProvisioningRunsAtEveryBootUntilDone(t *testing.T) {
	g := testGuest()
	g.Provision = []string{"echo 'it''s' here", "touch /x"}
	_, files := bootFiles(t, g)
	unit := files[unitDir+agentwire.ProvisionUnit]
	for _, want := range []string{
		"ConditionPathExists=!" + agentwire.ProvisionedMarker + "\n",
		"Type=oneshot\n",
		"ExecStart=" + ProvisionScript + "\n",
		"After=network-online.target cloud-config.service " + AgentUnit + "\n",
		"Before=cloud-final.service\n",
		"WantedBy=multi-user.target\n",
	} {
		if !strings.Contains(unit, want) {
			t.Errorf("provisioning unit lacks %q:\n%s", want, unit)
		}
	}
	script := files[ProvisionScript]
	order := []string{
		"export http_proxy=http://192.168.127.1:7890",
		"dpkg --configure -a",
		"apt-get -q -y -o DPkg::Lock::Timeout=600 -o Dpkg::Options::=--force-confold update",
		"install " + strings.Join(DefaultPackages, " ") + "\n",
		`step 'running echo '\''it'\'''\''s'\'' here'` + "\n",
		"echo 'it''s' here\n",
		"touch /x\n",
		"touch " + agentwire.ProvisionedMarker + "\n",
	}
	at := 0
	for _, want := range order {
		i := strings.Index(script[at:], want)
		if i < 0 {
			t.Fatalf("provisioning script lacks %q after offset %d:\n%s", want, at, script)
		}
		at += i + len(want)
	}

	g.Provision = []string{"cat <<X\n" + heredocTag + "\nX"}
	if _, err := UserData(g); err == nil {
		t.Error("a command holding the heredoc tag was taken")
	}
}

// The step lines the script writes are what the host shows; they must
// survive sh: run the step function for real.
func TestProvisionStepQuoting(t *testing.T) {
	sh, err := exec.LookPath("sh")
	if err != nil {
		t.Skip("no sh")
	}
	cmd := `echo "a 'b' $HOME"`
	step := filepath.Join(t.TempDir(), "step")
	script := "step() { echo \"$*\" >" + step + "; }\nstep " + shQuote("running "+firstLine(cmd)) + "\n"
	if out, err := exec.Command(sh, "-c", script).CombinedOutput(); err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	if b, _ := os.ReadFile(step); string(b) != "running "+cmd+"\n" {
		t.Errorf("step file %q", b)
	}
}

// The agent starts early: not after the network nor the whole of
// basic.target, but still after udev (its channel's driver, the cidata
// label) and the local file systems, and it waits for its channel.
func TestAgentUnitStartsEarly(t *testing.T) {
	_, files := bootFiles(t, testGuest())
	unit := files[unitDir+AgentUnit]
	for _, want := range []string{"\nDefaultDependencies=no\n", "\nConflicts=shutdown.target\n", " shutdown.target\n"} {
		if !strings.Contains(unit, want) {
			t.Errorf("agent unit lacks %q:\n%s", want, unit)
		}
	}
	after := ""
	for _, l := range strings.Split(unit, "\n") {
		if v, ok := strings.CutPrefix(l, "After="); ok {
			after += " " + v
		}
	}
	for _, want := range []string{"systemd-udev-trigger.service", "local-fs.target"} {
		if !strings.Contains(after, want) {
			t.Errorf("agent unit not after %s: After=%s", want, after)
		}
	}
	for _, early := range []string{"network", "basic.target", "cloud-init", "sysinit.target"} {
		if strings.Contains(after, early) {
			t.Errorf("agent unit waits for %s: After=%s", early, after)
		}
	}
	update := files[agentUpdatePath]
	wait := strings.Index(update, "/sys/class/virtio-ports/*/name")
	if wait < 0 || !strings.Contains(update, agentwire.SerialPort) || wait > strings.Index(update, "want=") {
		t.Errorf("agent-update does not wait for the channel first:\n%s", update)
	}
}

// unitSection is the settings of one [section] of a systemd unit.
func unitSection(unit, section string) map[string]string {
	m := map[string]string{}
	in := false
	for _, line := range strings.Split(unit, "\n") {
		line = strings.TrimSpace(line)
		if strings.HasPrefix(line, "[") {
			in = line == "["+section+"]"
			continue
		}
		if k, v, ok := strings.Cut(line, "="); ok && in {
			m[k] = v
		}
	}
	return m
}

// A guest whose seed holds no agent (a cluster's) fetches the host's from
// the URL its user-data names, bypassing the proxy, and installs it only
// if its sha256 is the one the user-data gives: a proxy or a network that
// serves another binary gets nothing installed. The script runs here with
// its guest paths moved into a temporary directory and curl a stand-in.
func TestAgentUpdateFetchesTheAgentOnACluster(t *testing.T) {
	sh, err := exec.LookPath("sh")
	if err != nil {
		t.Skip("no sh")
	}
	g := testGuest()
	g.AgentURL = "http://10.96.7.8:7890/cowork-agent/linux-amd64"
	agent := []byte("#!/bin/sh\necho the host's agent\n")
	g.AgentSum = sha256Hex(agent)
	ud, err := UserData(g)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(ud), AgentSourcePath) || !strings.Contains(string(ud), g.AgentURL+" "+g.AgentSum) {
		t.Fatalf("the user-data does not name the agent's source:\n%s", ud)
	}
	_, files := bootFiles(t, g)
	// run runs the script; cidata puts a seed disk there as KubeVirt
	// gives one (user-data, no agent), which "mount" leaves empty.
	run := func(t *testing.T, source string, served []byte, cidata bool) (root string, out []byte, err error) {
		root = t.TempDir()
		for _, d := range []string{"bin", "usr/local/bin", "usr/local/lib/cowork", "etc/cowork", "run"} {
			os.MkdirAll(filepath.Join(root, d), 0o755)
		}
		if cidata {
			os.MkdirAll(filepath.Join(root, "dev/disk/by-label"), 0o755)
			os.WriteFile(filepath.Join(root, "dev/disk/by-label/cidata"), nil, 0o600)
			for _, c := range []string{"mount", "umount"} {
				os.WriteFile(filepath.Join(root, "bin", c), []byte("#!/bin/sh\nexit 0\n"), 0o755)
			}
		}
		os.WriteFile(filepath.Join(root, "served"), served, 0o600)
		// curl -o FILE URL: the served file, and the arguments it got.
		os.WriteFile(filepath.Join(root, "bin", "curl"), []byte(`#!/bin/sh
echo "$@" >"`+root+`/curl.args"
while [ $# -gt 0 ]; do case $1 in -o) out=$2; shift;; esac; shift; done
cp "`+root+`/served" "$out"
`), 0o755)
		if source != "" {
			os.WriteFile(filepath.Join(root, AgentSourcePath[1:]), []byte(source), 0o644)
		}
		script := files[agentUpdatePath]
		for _, p := range []string{AgentPath, agentSumPath, AgentSourcePath, "/run/", "/dev/disk/", "/sys/"} {
			script = strings.ReplaceAll(script, p, filepath.Join(root, p[1:])+map[bool]string{true: "/", false: ""}[strings.HasSuffix(p, "/")])
		}
		script = strings.ReplaceAll(script, "$(seq 100)", "1")
		p := filepath.Join(root, "agent-update")
		os.WriteFile(p, []byte(script), 0o700)
		cmd := exec.Command(sh, p)
		cmd.Env = append(os.Environ(), "PATH="+filepath.Join(root, "bin")+":"+os.Getenv("PATH"))
		out, err = cmd.CombinedOutput()
		return root, out, err
	}
	installed := func(root string) []byte { b, _ := os.ReadFile(filepath.Join(root, AgentPath[1:])); return b }

	for _, cidata := range []bool{false, true} {
		root, out, err := run(t, g.AgentURL+" "+g.AgentSum+"\n", agent, cidata)
		if err != nil || string(installed(root)) != string(agent) {
			t.Fatalf("the served agent with the right sum (a seed disk without an agent: %v): %v, installed %q\n%s", cidata, err, installed(root), out)
		}
	}
	root, _, err := run(t, g.AgentURL+" "+g.AgentSum+"\n", agent, true)
	if err != nil {
		t.Fatal(err)
	}
	if args, _ := os.ReadFile(filepath.Join(root, "curl.args")); !strings.Contains(string(args), "--noproxy *") || !strings.Contains(string(args), g.AgentURL) {
		t.Errorf("curl was run as %q; want it to bypass the proxy for %s", args, g.AgentURL)
	}
	if sum, _ := os.ReadFile(filepath.Join(root, agentSumPath[1:])); !strings.HasPrefix(string(sum), g.AgentSum+" ") {
		t.Errorf("the installed agent's sum is recorded as %q", sum)
	}

	root, out, err := run(t, g.AgentURL+" "+g.AgentSum+"\n", []byte("#!/bin/sh\necho something else\n"), false)
	if err == nil || installed(root) != nil || !strings.Contains(string(out), "not the one the host expects") {
		t.Fatalf("another binary served: %v, installed %q\n%s", err, installed(root), out)
	}
	if left, _ := filepath.Glob(filepath.Join(root, "run", "cowork-agent.*")); len(left) != 0 {
		t.Errorf("the download was left behind: %v", left)
	}

	root, out, err = run(t, "", agent, false)
	if err != nil || installed(root) != nil || !strings.Contains(string(out), "no source") {
		t.Fatalf("no cidata and no source: %v, installed %q\n%s", err, installed(root), out)
	}
}

func sha256Hex(b []byte) string {
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:])
}

// A cluster's guest has no share: no virtiofs mount, and a /workspace of
// its own that its user owns; its agent's source and its proxy settings
// are written at every boot, before the agent starts, so a new build's
// agent or a proxy made again reach it.
func TestAGuestWithoutAShare(t *testing.T) {
	g := testGuest()
	g.ShareTag, g.AgentURL, g.AgentSum = "", "http://10.96.7.8:7890/cowork-agent/linux-amd64", strings.Repeat("ab", 32)
	ud, err := UserData(g)
	if err != nil {
		t.Fatal(err)
	}
	var cfg struct {
		Mounts [][]string `yaml:"mounts"`
	}
	if err := yaml.Unmarshal(ud, &cfg); err != nil {
		t.Fatal(err)
	}
	if len(cfg.Mounts) != 0 {
		t.Errorf("a guest without a share mounts %v", cfg.Mounts)
	}
	bootcmd, files := bootFiles(t, g)
	if !strings.Contains(bootcmd, "mkdir -p /workspace && chown 501 /workspace\n") {
		t.Errorf("the boot does not give the user its /workspace:\n%s", bootcmd)
	}
	for path, want := range map[string]string{
		AgentSourcePath:                      g.AgentURL + " " + g.AgentSum + "\n",
		"/etc/profile.d/cowork-proxy.sh":     "https_proxy=http://192.168.127.1:7890",
		"/etc/apt/apt.conf.d/95cowork-proxy": `Acquire::https::Proxy "http://192.168.127.1:7890";`,
	} {
		if !strings.Contains(files[path], want) {
			t.Errorf("the boot writes %s as %q; want it to hold %q", path, files[path], want)
		}
	}
	if strings.Index(bootcmd, "cat >"+AgentSourcePath+".new") > strings.Index(bootcmd, "systemctl daemon-reload") {
		t.Error("the agent's source is written after the agent starts")
	}
	g = testGuest() // a local guest: the share mounted, nothing of the above at boot
	ud, _ = UserData(g)
	yaml.Unmarshal(ud, &cfg)
	bootcmd, files = bootFiles(t, g)
	if len(cfg.Mounts) != 1 || cfg.Mounts[0][0] != "workspace" || strings.Contains(bootcmd, "chown") || files[AgentSourcePath] != "" {
		t.Errorf("a local guest: mounts %v, bootcmd:\n%s", cfg.Mounts, bootcmd)
	}
}

// From a cluster guest's second boot on, its agent has started from the
// last boot's source before the boot script runs: a new source (another
// build, a proxy made again) restarts it, so that its update script
// fetches the new agent at once; an unchanged one only starts it. The
// boot script runs here with its paths in a temporary directory and
// systemctl a stand-in that records what it is asked.
func TestANewAgentSourceRestartsTheAgent(t *testing.T) {
	sh, err := exec.LookPath("sh")
	if err != nil {
		t.Skip("no sh")
	}
	root := t.TempDir()
	for _, d := range []string{"bin", "etc/systemd/system", "etc/profile.d", "etc/apt/apt.conf.d"} {
		os.MkdirAll(filepath.Join(root, d), 0o755)
	}
	calls := filepath.Join(root, "systemctl.calls")
	for _, c := range []string{"systemctl", "chown"} {
		os.WriteFile(filepath.Join(root, "bin", c), []byte("#!/bin/sh\necho \""+c+" $*\" >>"+calls+"\n"), 0o755)
	}
	boot := func(g Guest) string {
		t.Helper()
		bootcmd, _ := bootFiles(t, g)
		for _, p := range []string{"/usr/local/lib/cowork", "/etc/systemd/system", "/etc/cowork", "/etc/profile.d", "/etc/apt/apt.conf.d", "/workspace"} {
			bootcmd = strings.ReplaceAll(bootcmd, p, filepath.Join(root, p[1:]))
		}
		os.Remove(calls)
		cmd := exec.Command(sh, "-c", bootcmd)
		cmd.Env = append(os.Environ(), "PATH="+filepath.Join(root, "bin")+":"+os.Getenv("PATH"))
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("the boot script: %v\n%s", err, out)
		}
		b, _ := os.ReadFile(calls)
		return string(b)
	}
	g := testGuest()
	g.ShareTag, g.AgentURL, g.AgentSum = "", "http://10.96.7.8:7890/cowork-agent/linux-amd64", strings.Repeat("ab", 32)
	if got := boot(g); !strings.Contains(got, "systemctl restart --no-block "+AgentUnit) {
		t.Errorf("a first boot: %q", got)
	}
	if got := boot(g); !strings.Contains(got, "systemctl start --no-block "+AgentUnit) || strings.Contains(got, "restart") {
		t.Errorf("a boot with nothing new: %q", got)
	}
	g.AgentSum = strings.Repeat("cd", 32) // another build's agent
	if got := boot(g); !strings.Contains(got, "systemctl restart --no-block "+AgentUnit) {
		t.Errorf("a boot with a new agent source: %q; want the agent restarted", got)
	}
	if got := boot(g); strings.Contains(got, "restart") {
		t.Errorf("the boot after: %q; want only a start", got)
	}
}
