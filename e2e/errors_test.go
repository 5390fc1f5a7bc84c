//go:build e2e

package e2e

import (
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/coworkhq/cowork/internal/fakeapi"
)

// TestErrorsAUserCanActOn: what a user sees when something is wrong says
// what, and what to do, in a line or two.
func TestErrorsAUserCanActOn(t *testing.T) {
	api := fakeapi.New()
	srv := httptest.NewServer(api)
	defer srv.Close()
	b := make([]byte, 16)
	rand.Read(b)
	e := newEnv(t)
	e.extraEnv = []string{"ANTHROPIC_BASE_URL=" + srv.URL, "ANTHROPIC_API_KEY=sk-ant-e2e-" + hex.EncodeToString(b), "ANTHROPIC_AUTH_TOKEN=",
		"DISABLE_TELEMETRY=1", "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC=1"}
	const name = "errs"
	n := func(args ...string) []string { return append([]string{"--name", name}, args...) }
	t.Cleanup(func() { e.run(n("delete", "--force")...) })

	t.Run("init without --arch takes the kernel's", func(t *testing.T) {
		args := e.initArgs()
		i := slices.Index(args, "--arch")
		args = slices.Delete(args, i, i+2)
		r := e.must(n(args...)...)
		t.Logf("what the user sees:\n%s", r.errOut)
		b, err := os.ReadFile(filepath.Join(e.instanceDir(name), "config.json"))
		if err != nil {
			t.Fatal(err)
		}
		var cfg struct{ Arch string }
		json.Unmarshal(b, &cfg)
		if cfg.Arch != testGuest.arch {
			t.Fatalf("the guest's arch is %q, want the kernel's %s: %s", cfg.Arch, testGuest.arch, r)
		}
		// The next steps name the instance.
		if !strings.Contains(r.errOut, "cowork --name errs shell") {
			t.Errorf("init's next steps lack --name: %s", r)
		}
	})

	t.Run("a QEMU that gives up is quoted", func(t *testing.T) {
		// A QEMU whose network card's option ROM is missing, as with a
		// minimal install without ipxe-qemu.
		bin := t.TempDir()
		real := "/usr/bin/" + map[string]string{"arm64": "qemu-system-aarch64", "amd64": "qemu-system-x86_64"}[testGuest.arch]
		wrapper := fmt.Sprintf(`#!/bin/sh
for a in "$@"; do
  case "$a" in virtio-net-pci,*) a="virtio-net-pci,romfile=efi-missing.rom,${a#virtio-net-pci,}" ;; esac
  set -- "$@" "$a"; shift
done
exec %s "$@"
`, real)
		if err := os.WriteFile(filepath.Join(bin, filepath.Base(real)), []byte(wrapper), 0o755); err != nil {
			t.Fatal(err)
		}
		e.must(n("stop")...)
		saved := e.extraEnv
		e.extraEnv = append(slices.Clone(saved), "PATH="+bin+":"+os.Getenv("PATH"))
		r := e.run(n("start")...)
		e.extraEnv = saved
		t.Logf("what the user sees:\n%s", r.errOut)
		if r.code != 1 || !strings.Contains(r.errOut, `failed to find romfile "efi-missing.rom"`) ||
			!strings.Contains(r.errOut, "apt install ipxe-qemu") || strings.Contains(r.errOut, "rpc error") {
			t.Errorf("start with a QEMU that gives up: %s", r)
		}
		if lines := strings.Count(strings.TrimSpace(r.errOut), "\n") + 1; lines > 4 {
			t.Errorf("the failure takes %d lines: %s", lines, r)
		}
		if r := e.must(n("status")...); !strings.Contains(r.out, `failed to find romfile "efi-missing.rom"`) {
			t.Errorf("status does not say why the start failed: %s", r)
		}
		e.must(n("start")...)
	})

	t.Run("ask with no way to the API says so at once", func(t *testing.T) {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		closed := "http://" + ln.Addr().String()
		ln.Close()
		saved := e.extraEnv
		e.extraEnv = append(slices.Clone(saved), "ANTHROPIC_BASE_URL="+closed)
		r := e.run(n("ask", "say hi")...)
		e.extraEnv = saved
		t.Logf("what the user sees:\n%s", r.errOut)
		if r.code != 1 || !strings.Contains(r.errOut, "cowork: open an API session: the API endpoint "+closed+" cannot be reached") || strings.Contains(r.errOut, "rpc error") {
			t.Errorf("ask with the endpoint down: %s", r)
		}
	})

	t.Run("ask --resume of an unknown session", func(t *testing.T) {
		const unknown = "3f2c1a7e-1111-4222-8333-944445555666"
		r := e.run(n("ask", "--resume", unknown, "go on")...)
		t.Logf("what the user sees:\n%s", r.errOut)
		if r.code != 1 || !strings.Contains(r.errOut, "No conversation found with session ID: "+unknown) || strings.Contains(r.errOut, "session "+unknown) {
			t.Errorf("ask --resume %s: %s", unknown, r)
		}
		if reqs := api.Requests(); len(reqs) != 0 {
			t.Errorf("the API got %d requests", len(reqs))
		}
	})
}
