//go:build e2e

package e2e

import (
	"archive/tar"
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// helloSource is the one program of the test's container image: it shows
// the proxy the container was given and, asked to, dials the gateway's
// proxy port from the container's own network.
const helloSource = `package main

import (
	"fmt"
	"net"
	"os"
	"time"
)

func main() {
	fmt.Println("hello from a container, proxy " + os.Getenv("HTTPS_PROXY"))
	if len(os.Args) > 1 {
		c, err := net.DialTimeout("tcp", os.Args[1], 5*time.Second)
		if err != nil {
			fmt.Println("dial:", err)
			os.Exit(1)
		}
		c.Close()
		fmt.Println("dial ok")
	}
}
`

// checkDocker runs on a guest made with --with docker: the user runs
// docker without sudo, a container runs from an image loaded offline (no
// registry answers here) on the default bridge network, it has the proxy,
// and a pull goes to the registry through the auditing proxy.
func checkDocker(t *testing.T, e *env) {
	archive := helloImage(t, testGuest.arch)
	if r := e.must("cp", archive, ":/tmp/hello.tar"); r.code != 0 {
		t.Fatal(r)
	}
	if r := e.run("exec", "docker load -i /tmp/hello.tar"); r.code != 0 || !strings.Contains(r.out, "cowork-e2e/hello:1") {
		t.Fatalf("docker load as the user: %s", r)
	}
	r := e.run("exec", "docker run --rm cowork-e2e/hello:1 192.168.127.1:7890")
	if r.code != 0 || r.out != "hello from a container, proxy http://192.168.127.1:7890\ndial ok\n" {
		t.Errorf("docker run on the bridge network: %s", r)
		t.Logf("dockerd's journal and the modules: %s", e.run("exec", "-u", "root", "journalctl -u docker --no-pager | tail -30; lsmod"))
	}
	// A container's own traffic leaves through the guest, under its policy:
	// a private address is denied, and audited as such.
	if r := e.run("exec", "docker run --rm cowork-e2e/hello:1 10.11.12.13:80"); r.code == 0 || strings.Contains(r.out, "dial ok") {
		t.Errorf("a container reached a private address: %s", r)
	}
	if r := e.run("exec", "docker pull busybox:1.36"); r.code == 0 {
		t.Errorf("a pull succeeded without a registry: %s", r)
	}
	lines := e.auditLines(t)
	if _, ok := find(lines, func(a auditLine) bool {
		return a.Kind == "connect" && strings.Contains(a.Name, "docker.io")
	}); !ok {
		t.Errorf("the pull did not go through the auditing proxy: %+v", lines)
	}
	if _, ok := find(lines, func(a auditLine) bool {
		return a.Verdict == "deny" && a.Dst == "10.11.12.13:80"
	}); !ok {
		t.Errorf("the container's connection to a private address is not audited as denied: %+v", lines)
	}
}

// helloImage builds helloSource for arch and packs it as an image archive
// `docker load` takes (a manifest, a config and one layer).
func helloImage(t *testing.T, arch string) string {
	t.Helper()
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "main.go"), []byte(helloSource), 0o600); err != nil {
		t.Fatal(err)
	}
	build := exec.Command("go", "build", "-o", "hello", "main.go")
	build.Dir = dir
	build.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux", "GOARCH="+arch, "GO111MODULE=off")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("build the container's program: %v: %s", err, out)
	}
	bin, err := os.ReadFile(filepath.Join(dir, "hello"))
	if err != nil {
		t.Fatal(err)
	}
	layer := tarOf(t, map[string][]byte{"hello": bin}, 0o755)
	layerSum := sha256.Sum256(layer)
	config, _ := json.Marshal(map[string]any{
		"architecture": arch, "os": "linux",
		"config": map[string]any{"Entrypoint": []string{"/hello"}},
		"rootfs": map[string]any{"type": "layers", "diff_ids": []string{"sha256:" + hex.EncodeToString(layerSum[:])}},
	})
	configSum := sha256.Sum256(config)
	configName := hex.EncodeToString(configSum[:]) + ".json"
	manifest, _ := json.Marshal([]map[string]any{{
		"Config": configName, "RepoTags": []string{"cowork-e2e/hello:1"}, "Layers": []string{"layer/layer.tar"},
	}})
	archive := filepath.Join(dir, "hello.tar")
	if err := os.WriteFile(archive, tarOf(t, map[string][]byte{
		"manifest.json": manifest, configName: config, "layer/layer.tar": layer,
	}, 0o644), 0o644); err != nil {
		t.Fatal(err)
	}
	return archive
}

func tarOf(t *testing.T, files map[string][]byte, mode int64) []byte {
	t.Helper()
	var b bytes.Buffer
	w := tar.NewWriter(&b)
	for name, data := range files {
		if err := w.WriteHeader(&tar.Header{Name: name, Mode: mode, Size: int64(len(data)), Typeflag: tar.TypeReg}); err != nil {
			t.Fatal(err)
		}
		w.Write(data)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}
