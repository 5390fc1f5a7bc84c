package image

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

func TestWithDockerAddsTheEngineAfterTheRest(t *testing.T) {
	base := testGuest()
	g := WithDocker(base)
	if !slices.Equal(g.Packages, DefaultPackages) || len(base.Provision) != len(DefaultProvision) {
		t.Fatalf("WithDocker changed the packages or the commands it was given: %q", g.Packages)
	}
	if len(g.Provision) != len(DefaultProvision)+1 {
		t.Fatalf("provision %q: want the defaults and one more command", g.Provision)
	}
	script := ProvisionScriptOf(g)
	install := strings.Index(script, "install --no-install-recommends docker.io apparmor\n")
	if install < strings.Index(script, "install "+strings.Join(DefaultPackages, " ")) || install > strings.Index(script, "systemctl restart docker.service") {
		t.Errorf("docker is not installed after the packages and before it is configured:\n%s", script)
	}
	if strings.Count(script, " update\n") != 1 {
		t.Errorf("the package lists are not updated once:\n%s", script)
	}
	if sh, err := exec.LookPath("sh"); err == nil {
		if out, err := exec.Command(sh, "-n", "-c", script).CombinedOutput(); err != nil {
			t.Errorf("the provisioning script does not parse: %v: %s", err, out)
		}
	}
}

// The daemon (which pulls) and the containers both get the proxy: the
// command runs in sh, twice (it must be safe to repeat), with its files
// under a temporary root and the commands that change the system logged
// instead.
func TestDockerGoesThroughTheProxy(t *testing.T) {
	sh, err := exec.LookPath("sh")
	if err != nil {
		t.Skip("no sh")
	}
	g := testGuest()
	g.Packages = nil // the command updates the package lists itself
	cmd := dockerProvision(g)
	root := t.TempDir()
	log := filepath.Join(root, "log")
	bin := filepath.Join(root, "bin")
	os.Mkdir(bin, 0o755)
	for _, stub := range []string{"apt-get", "chown", "usermod", "systemctl"} {
		os.WriteFile(filepath.Join(bin, stub), []byte("#!/bin/sh\necho "+stub+" \"$*\" >>"+log+"\n"), 0o755)
	}
	script := "set -e\nPATH=" + bin + ":$PATH\nstep() { echo step \"$*\" >>" + log + "; }\n"
	script += strings.NewReplacer(" >/", " >"+root+"/", "mkdir -p /", "mkdir -p "+root+"/").Replace(cmd)
	for range 2 { // provisioning may run again after a cut: the same once more
		if out, err := exec.Command(sh, "-c", script).CombinedOutput(); err != nil {
			t.Fatalf("%v: %s\n%s", err, out, script)
		}
	}
	read := func(p string) string {
		b, err := os.ReadFile(filepath.Join(root, p))
		if err != nil {
			t.Fatal(err)
		}
		return string(b)
	}
	dropIn := read("/etc/systemd/system/docker.service.d/cowork-proxy.conf")
	want := `Environment="HTTP_PROXY=http://192.168.127.1:7890" "HTTPS_PROXY=http://192.168.127.1:7890" "NO_PROXY=` + g.NoProxy + `"`
	if dropIn != "[Service]\n"+want+"\n" {
		t.Errorf("dockerd's drop-in:\n%s\nwant a [Service] with\n%s", dropIn, want)
	}
	for _, f := range []string{"/root/.docker/config.json", "/home/cowork/.docker/config.json"} {
		var c struct {
			Proxies map[string]map[string]string `json:"proxies"`
		}
		if err := json.Unmarshal([]byte(read(f)), &c); err != nil {
			t.Fatalf("%s: %v", f, err)
		}
		if d := c.Proxies["default"]; d["httpProxy"] != g.ProxyURL || d["httpsProxy"] != g.ProxyURL || d["noProxy"] != g.NoProxy {
			t.Errorf("%s: proxies %v", f, c.Proxies)
		}
	}
	apt := "apt-get -q -y -o DPkg::Lock::Timeout=600 -o Dpkg::Options::=--force-confold "
	wantLog := "step installing Docker Engine\n" + apt + "update\n" + apt + "install --no-install-recommends docker.io apparmor\n" +
		"step configuring Docker Engine\nchown -R cowork: /home/cowork/.docker\nusermod -aG docker cowork\n" +
		"systemctl daemon-reload\nsystemctl enable docker.service\nsystemctl restart docker.service\n"
	if got := read("log"); got != wantLog+wantLog {
		t.Errorf("the command ran\n%s\nwant\n%s", got, wantLog)
	}
	if strings.Index(cmd, "cowork-proxy.conf") > strings.Index(cmd, "systemctl restart") {
		t.Errorf("dockerd restarts before its proxy is set:\n%s", cmd)
	}
}
