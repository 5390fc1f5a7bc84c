package instance

import (
	"strings"
	"testing"
)

func TestClusterSettingsAreChecked(t *testing.T) {
	kube := func(edit func(c *Config)) *Config {
		c := goodConfig()
		c.Name = "sandbox-1"
		c.Backend = BackendKubeVirt
		c.Cluster = &Cluster{Context: "kind-cowork", Namespace: "team-a", Image: "quay.io/containerdisks/ubuntu:22.04"}
		if edit != nil {
			edit(c)
		}
		return c
	}
	if err := kube(nil).Validate(0); err != nil {
		t.Fatalf("a good kubevirt config: %v", err)
	}
	digest := "quay.io/containerdisks/ubuntu@sha256:" + strings.Repeat("ab", 32)
	if err := kube(func(c *Config) { c.Cluster.Image = digest; c.Cluster.Context = "" }).Validate(0); err != nil {
		t.Fatalf("an image by digest, the current context: %v", err)
	}
	for _, tc := range []struct {
		name string
		edit func(c *Config)
		want string
	}{
		{"unknown backend", func(c *Config) { c.Backend = "docker" }, `--backend "docker"`},
		{"cluster settings on a local instance", func(c *Config) { c.Backend = BackendLocal }, "need --backend kubevirt"},
		{"no cluster settings", func(c *Config) { c.Cluster = nil }, "no cluster settings"},
		{"bad namespace", func(c *Config) { c.Cluster.Namespace = "Team_A" }, "--namespace"},
		{"empty namespace", func(c *Config) { c.Cluster.Namespace = "" }, "--namespace"},
		{"name too long for Kubernetes", func(c *Config) { c.Name = strings.Repeat("a", 41) }, "cannot name a Kubernetes object"},
		{"a file path as the image", func(c *Config) { c.Cluster.Image = "/var/lib/ubuntu.img" }, "container disk reference"},
		{"a URL as the image", func(c *Config) { c.Cluster.Image = "https://cloud-images.ubuntu.com/x.img" }, "container disk reference"},
		{"an option as the image", func(c *Config) { c.Cluster.Image = "--privileged" }, "container disk reference"},
		{"a control character in the context", func(c *Config) { c.Cluster.Context = "a\nb" }, "--context"},
		{"a mount", func(c *Config) { c.Mounts = []Mount{{Host: "/tmp", Guest: "/mnt/x"}} }, "cannot mount this machine's folders"},
		{"a local disk", func(c *Config) { c.DiskFormat = DiskQcow2 }, "no local disk"},
		{"a clone of a name Kubernetes refuses", func(c *Config) { c.Cluster.CloneOf = "Box" }, `clone_of "Box"`},
		{"a clone of a path", func(c *Config) { c.Cluster.CloneOf = "../box" }, "clone_of"},
		{"a clone of a name too long", func(c *Config) { c.Cluster.CloneOf = strings.Repeat("a", 41) }, "clone_of"},
		{"a clone of itself", func(c *Config) { c.Cluster.CloneOf = c.Name }, "another instance"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := kube(tc.edit).Validate(0)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Validate: %v, want an error saying %q", err, tc.want)
			}
		})
	}
	if err := kube(func(c *Config) { c.Cluster.CloneOf = "box" }).Validate(0); err != nil {
		t.Fatalf("a clone of the instance box: %v", err)
	}
	if kube(nil).Remote() != true || goodConfig().Remote() {
		t.Error("Remote: a kubevirt instance is remote, a local one is not")
	}
}
