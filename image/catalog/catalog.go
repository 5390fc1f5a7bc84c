// Package catalog is the base images cowork installs when none is given:
// plain data, so the CLI can name the default without linking what
// downloads or converts it (cowork-hostd does that).
package catalog

import (
	"fmt"
	"path"
)

// Base is a pinned base image: a dated Ubuntu release, its digest checked
// after download, and where that digest was read.
type Base struct {
	Name   string
	Arch   string // GOARCH
	URL    string
	SHA256 string
	// Source is where the digest was published, for whoever checks it.
	Source string
}

// ubuntuSource is where the pinned digests come from: Lima's
// ubuntu-22.04 template pins the same dated release.
const ubuntuSource = "github.com/lima-vm/lima templates/ubuntu-22.04.yaml (commit 0625d0b084450e874869dcbc9f63d4312797c3fe)"

// Catalog is the Ubuntu 22.04 (jammy) cloud images cowork installs by default.
var Catalog = []Base{
	{
		Name:   "ubuntu-22.04",
		Arch:   "arm64",
		URL:    "https://cloud-images.ubuntu.com/releases/jammy/release-20250305/ubuntu-22.04-server-cloudimg-arm64.img",
		SHA256: "46113bedf45e3429bc7e0a74e9bca0a75768c595f61ee45d9cd0141838bda2ca",
		Source: ubuntuSource,
	},
	{
		Name:   "ubuntu-22.04",
		Arch:   "amd64",
		URL:    "https://cloud-images.ubuntu.com/releases/jammy/release-20250305/ubuntu-22.04-server-cloudimg-amd64.img",
		SHA256: "eb4707ac0dec191347bb5123ad2fd2b372077a66e5300ddb4c0d16444f619fa6",
		Source: ubuntuSource,
	},
}

// Default is the catalog's image for a guest architecture.
func Default(arch string) (Base, error) {
	for _, b := range Catalog {
		if b.Arch == arch {
			return b, nil
		}
	}
	return Base{}, fmt.Errorf("no default image for %s guests; give one with --image", arch)
}

// FileName is the name the image is cached under.
func (b Base) FileName() string { return path.Base(b.URL) }
