package instance

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/coworkhq/cowork/units"
)

func goodConfig() *Config {
	return &Config{Name: "sandbox", CPUs: 4, Memory: 4 * units.GiB, Disk: 10 * units.GiB, Workspace: "/tmp/ws", Arch: "arm64", Boot: BootEFI}
}

func TestValidate(t *testing.T) {
	if err := goodConfig().Validate(16 * units.GiB); err != nil {
		t.Fatalf("a good config: %v", err)
	}
	withMAC := goodConfig()
	withMAC.MAC = "52:54:aa:bb:cc:dd" // a fork's, its source's
	if err := withMAC.Validate(16 * units.GiB); err != nil {
		t.Fatalf("a config with a MAC: %v", err)
	}
	for _, tc := range []struct {
		change func(*Config)
		want   string
	}{
		{func(c *Config) { c.Name = "a/b" }, "instance name"},
		{func(c *Config) { c.Name = ".." }, "instance name"},
		{func(c *Config) { c.Name = CacheDir }, "where cowork keeps its downloads"},
		{func(c *Config) { c.CPUs = 0 }, "--cpus 0"},
		{func(c *Config) { c.CPUs = 1000 }, "--cpus 1000"},
		{func(c *Config) { c.Memory = 0 }, "--memory 0 B is below the minimum"},
		{func(c *Config) { c.Memory = 32 * units.GiB }, "more than this machine has (16 GiB)"},
		{func(c *Config) { c.Disk = units.KiB }, "--disk 1 KiB is below the minimum"},
		{func(c *Config) { c.Workspace = "relative" }, "--workspace"},
		{func(c *Config) { c.Arch = "riscv64" }, "riscv64"},
		{func(c *Config) { c.Cmdline = "quiet" }, "--cmdline needs --kernel"},
		{func(c *Config) { c.Network.MaxFlows = -1 }, "max_flows -1"},
		{func(c *Config) { c.Network.MaxFlows = MaxFlowsCeiling + 1 }, "max_flows at most"},
		{func(c *Config) { c.Network.TCPIdleSeconds = -5 }, "tcp_idle_seconds -5"},
		{func(c *Config) { c.MAC = "nonsense" }, "mac \"nonsense\""},
		{func(c *Config) { c.MAC = "53:54:00:12:34:56" }, "locally administered unicast"}, // multicast
		{func(c *Config) { c.MAC = "00:16:3e:12:34:56" }, "locally administered unicast"}, // a vendor's
		{func(c *Config) { c.MAC = "52:54:00:12:34:56:78:9a" }, "locally administered unicast"},
		{func(c *Config) {
			p, _ := ParsePublish("8080:80")
			c.Publish = []Publish{p, p}
		}, "published twice"},
		{func(c *Config) {
			for i := range MaxPublish + 1 {
				p, _ := ParsePublish(fmt.Sprintf("%d:80", 10000+i))
				c.Publish = append(c.Publish, p)
			}
		}, "more than an instance publishes"},
	} {
		c := goodConfig()
		tc.change(c)
		if err := c.Validate(16 * units.GiB); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("got %v, want %q", err, tc.want)
		}
	}
}

func TestParsePublish(t *testing.T) {
	for in, want := range map[string]Publish{
		"8080:80":            {"127.0.0.1", 8080, 80, ""},
		"0.0.0.0:2222:22":    {"0.0.0.0", 2222, 22, ""},
		"127.0.0.1:5432:543": {"127.0.0.1", 5432, 543, ""},
		"5353:53/udp":        {"127.0.0.1", 5353, 53, "udp"},
		"8080:80/tcp":        {"127.0.0.1", 8080, 80, ""},
	} {
		if got, err := ParsePublish(in); err != nil || got != want {
			t.Errorf("%q: %+v %v", in, got, err)
		}
	}
	for _, bad := range []string{"80", "a:b", "0:80", "80:70000", "host:80:80", "1:2:3:4", "53:53/sctp", "53/udp"} {
		if _, err := ParsePublish(bad); err == nil {
			t.Errorf("%q parsed", bad)
		}
	}
}

func TestCreateIsAllOrNothing(t *testing.T) {
	t.Setenv("COWORK_HOME", t.TempDir())
	c := goodConfig()
	c.Workspace = filepath.Join(t.TempDir(), "ws")
	c.Disk = 2 * units.GiB
	image := filepath.Join(t.TempDir(), "image.raw")
	data := make([]byte, 3<<20)
	copy(data[1<<20:], "a block in the middle")
	os.WriteFile(image, data, 0o644)

	if err := Create(c, Sources{Image: image}, makeDisk); err != nil {
		t.Fatal(err)
	}
	p, _ := PathsFor("sandbox")
	st, err := os.Stat(p.Disk())
	if err != nil || st.Size() != int64(2*units.GiB) {
		t.Fatalf("disk: %v %v", st, err)
	}
	got := make([]byte, len(data))
	f, _ := os.Open(p.Disk())
	f.ReadAt(got, 0)
	f.Close()
	if string(got) != string(data) {
		t.Fatal("the disk does not start with the image")
	}
	if used := allocatedBytes(p.Disk()); used > 1<<20 {
		t.Errorf("the disk takes %d bytes: holes were not kept", used)
	}
	if _, err := os.Stat(c.Workspace); err != nil {
		t.Errorf("workspace not created: %v", err)
	}
	if err := Create(c, Sources{Image: image}, makeDisk); err == nil || !strings.Contains(err.Error(), "already exists") {
		t.Errorf("creating it again: %v", err)
	}

	// A failure leaves nothing behind.
	c2 := goodConfig()
	c2.Name, c2.Workspace, c2.Disk = "second", c.Workspace, units.GiB
	big := filepath.Join(t.TempDir(), "big.raw")
	f, _ = os.Create(big)
	f.Truncate(int64(2 * units.GiB))
	f.Close()
	if err := Create(c2, Sources{Image: big}, makeDisk); err == nil || !strings.Contains(err.Error(), "smaller than the image") {
		t.Fatalf("disk smaller than the image: %v", err)
	}
	if _, err := os.Stat(filepath.Join(os.Getenv("COWORK_HOME"), "second")); !os.IsNotExist(err) {
		t.Fatalf("a failed create left its directory: %v", err)
	}
}

func allocatedBytes(path string) int64 {
	var st syscall.Stat_t
	if syscall.Stat(path, &st) != nil {
		return -1
	}
	return st.Blocks * 512
}
