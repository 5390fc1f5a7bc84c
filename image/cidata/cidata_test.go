package cidata

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	diskfs "github.com/diskfs/go-diskfs"

	"github.com/coworkhq/cowork/image"
	"github.com/coworkhq/cowork/image/agentbin"
	"github.com/coworkhq/cowork/internal/permtest"
)

// requireAgents is set by `make test`, which builds and embeds the agents;
// a bare `go test` without them skips instead of failing.
func requireAgents(t *testing.T, arch string) {
	t.Helper()
	if _, err := agentbin.Agent(arch); err != nil {
		if os.Getenv("COWORK_TEST_REQUIRE_AGENTS") != "" {
			t.Fatal(err)
		}
		t.Skip(err)
	}
}

func testGuest() image.Guest {
	return image.Guest{Hostname: "cowork", User: "cowork", UID: 501, ShareTag: "workspace", ProxyURL: "http://192.168.127.1:7890",
		NoProxy: "localhost,127.0.0.1,.cowork.internal,192.168.127.0/24", Packages: image.DefaultPackages, Provision: image.DefaultProvision, MAC: "52:54:00:AA:BB:CC"}
}

// The seed ISO carries the provisioning commands, as the instance's
// config does: it is its owner's alone, whatever the umask.
func TestCIDataIsOwnerOnly(t *testing.T) {
	permtest.ClearUmask(t)
	requireAgents(t, "arm64")
	iso := filepath.Join(t.TempDir(), "cidata.iso")
	if err := Write(iso, CIData{InstanceID: "cowork-abc", Guest: testGuest(), Arch: "arm64"}); err != nil {
		t.Fatal(err)
	}
	permtest.WantMode(t, iso, 0o600)
}

func TestCIDataISO(t *testing.T) {
	requireAgents(t, "arm64")
	p := filepath.Join(t.TempDir(), "cidata.iso")
	if err := Write(p, CIData{InstanceID: "cowork-abc", Guest: testGuest(), Arch: "arm64"}); err != nil {
		t.Fatal(err)
	}
	d, err := diskfs.Open(p, diskfs.WithOpenMode(diskfs.ReadOnly))
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	fs, err := d.GetFilesystem(0)
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.TrimRight(fs.Label(), "\x00 "); got != "cidata" {
		t.Errorf("volume label %q", got)
	}
	read := func(name string) []byte {
		f, err := fs.OpenFile("/"+name, os.O_RDONLY)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		b, _ := io.ReadAll(f)
		return b
	}
	agent, _ := agentbin.Agent("arm64")
	if !bytes.Equal(read("cowork-agent"), agent) {
		t.Error("the agent on the ISO differs from the embedded one")
	}
	sum := sha256.Sum256(agent)
	if strings.TrimSpace(string(read("cowork-agent.sha256"))) != hex.EncodeToString(sum[:]) {
		t.Error("the agent's digest on the ISO is wrong")
	}
	if !bytes.Contains(read("meta-data"), []byte(`instance-id: "cowork-abc"`)) || !bytes.HasPrefix(read("user-data"), []byte("#cloud-config")) ||
		!bytes.Contains(read("network-config"), []byte(`mac_address: "52:54:00:aa:bb:cc"`)) {
		t.Error("meta-data, user-data or network-config is wrong")
	}
	// An independent reader agrees on the label.
	if blkid, err := exec.LookPath("blkid"); err == nil {
		out, _ := exec.Command(blkid, "-o", "value", "-s", "LABEL", p).Output()
		if strings.TrimSpace(string(out)) != "cidata" {
			t.Errorf("blkid reads label %q", out)
		}
	}
}

// A seed ISO left half-written by a crash is replaced, not appended to
// nor a reason to fail.
func TestCIDataOverAStaleTemporary(t *testing.T) {
	requireAgents(t, "arm64")
	iso := filepath.Join(t.TempDir(), "cidata.iso")
	os.WriteFile(iso+".tmp", bytes.Repeat([]byte{0xAA}, 4<<20), 0o644)
	if err := Write(iso, CIData{InstanceID: "cowork-abc", Guest: testGuest(), Arch: "arm64"}); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(iso + ".tmp"); !os.IsNotExist(err) {
		t.Error("the temporary was left behind")
	}
}

// An ISO made from the same inputs is kept (hostd then never reads the
// agent out of its executable); any change of input, or an ISO changed
// behind its back, makes a new one.
func TestCIDataKeptWhileItsInputsAreTheSame(t *testing.T) {
	requireAgents(t, "arm64")
	iso := filepath.Join(t.TempDir(), "cidata.iso")
	c := CIData{InstanceID: "cowork-abc", Guest: testGuest(), Arch: "arm64"}
	write := func(c CIData) os.FileInfo {
		t.Helper()
		if err := Write(iso, c); err != nil {
			t.Fatal(err)
		}
		fi, err := os.Stat(iso)
		if err != nil {
			t.Fatal(err)
		}
		return fi
	}
	first := write(c)
	if again := write(c); !os.SameFile(first, again) {
		t.Error("the same inputs wrote the ISO again")
	}
	c.Guest.Hostname = "other"
	changed := write(c)
	if os.SameFile(first, changed) {
		t.Fatal("a changed guest kept the old ISO")
	}
	if !readsHostname(t, iso, "other") {
		t.Error("the new ISO lacks the new hostname")
	}
	if err := os.Truncate(iso, 4096); err != nil {
		t.Fatal(err)
	}
	if fi := write(c); fi.Size() == 4096 || os.SameFile(changed, fi) {
		t.Error("a truncated ISO was kept")
	}
}

func readsHostname(t *testing.T, iso, name string) bool {
	t.Helper()
	d, err := diskfs.Open(iso, diskfs.WithOpenMode(diskfs.ReadOnly))
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	fs, err := d.GetFilesystem(0)
	if err != nil {
		t.Fatal(err)
	}
	f, err := fs.OpenFile("/meta-data", os.O_RDONLY)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(f)
	return bytes.Contains(b, []byte(name))
}
