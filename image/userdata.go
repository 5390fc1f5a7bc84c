package image

import (
	"fmt"
	"strconv"
	"strings"

	"gopkg.in/yaml.v3"
)

// Guest is what the cloud-config sets up in a new guest.
type Guest struct {
	Hostname string
	User     string // the guest user commands and Claude Code run as
	UID      int    // the host user's uid, so shared files have one owner
	ShareTag string // the virtiofs tag mounted at /workspace
	// ProxyURL is the auditing proxy the guest's tools use.
	ProxyURL string
	NoProxy  string
	// Packages are installed from the distribution; Provision runs after
	// them (Node.js, Claude Code), as root, with the proxy set.
	Packages  []string
	Provision []string
	// Marker is the file the agent reports as provisioning complete.
	Marker string
	// MAC is the address of the guest's NIC, which the network config
	// names eth0 and configures by DHCP.
	MAC string
}

// Paths in the guest that the cloud-config and the agent's unit share.
const (
	AgentPath       = "/usr/local/bin/cowork-agent"
	AgentUnit       = "cowork-agent.service"
	DefaultMarker   = "/var/lib/cowork/provisioned"
	cidataAgentName = "cowork-agent"
	cidataSumName   = "cowork-agent.sha256"
)

// DefaultPackages are the seed's toolchain, by Ubuntu 22.04's names.
var DefaultPackages = []string{
	"python3", "python3-pip", "python3-venv", "build-essential", "openjdk-11-jdk-headless",
	"git", "curl", "wget", "ripgrep", "fd-find", "fzf", "bat", "sqlite3", "postgresql-client",
	"ca-certificates", "gnupg", "unzip", "jq",
}

// DefaultProvision installs Node.js 22 from NodeSource and Claude Code from
// npm, and gives fd and bat their usual names.
var DefaultProvision = []string{
	"curl -fsSL https://deb.nodesource.com/setup_22.x | bash -",
	"apt-get install -y nodejs",
	"npm install -g @anthropic-ai/claude-code",
	"ln -sf /usr/bin/fdfind /usr/local/bin/fd",
	"ln -sf /usr/bin/batcat /usr/local/bin/bat",
}

// UserData is the cloud-config for g.
func UserData(g Guest) ([]byte, error) {
	if g.User == "" || g.UID <= 0 || g.Hostname == "" {
		return nil, fmt.Errorf("cloud-config: need a user, a uid above 0 and a hostname")
	}
	if g.Marker == "" {
		g.Marker = DefaultMarker
	}
	proxyEnv := fmt.Sprintf("http_proxy=%[1]s https_proxy=%[1]s HTTP_PROXY=%[1]s HTTPS_PROXY=%[1]s no_proxy=%[2]s NO_PROXY=%[2]s npm_config_proxy=%[1]s npm_config_https_proxy=%[1]s", g.ProxyURL, g.NoProxy)
	var provision strings.Builder
	provision.WriteString("set -eux\n")
	if len(g.Packages) > 0 {
		// cloud-init goes on after a failed package module; provisioning must not.
		provision.WriteString("for p in " + strings.Join(g.Packages, " ") + "; do\n" +
			"  dpkg -s \"$p\" >/dev/null 2>&1 || { echo \"cowork: package $p is not installed\" >&2; exit 1; }\ndone\n")
	}
	if g.ProxyURL != "" {
		provision.WriteString("export " + proxyEnv + "\n")
	}
	for _, c := range g.Provision {
		provision.WriteString(c + "\n")
	}
	provision.WriteString("mkdir -p " + dirOf(g.Marker) + "\ntouch " + g.Marker + "\n")

	files := []map[string]any{
		{"path": "/usr/local/lib/cowork/provision", "permissions": "0755", "content": provision.String()},
	}
	if g.ProxyURL != "" {
		files = append(files,
			map[string]any{"path": "/etc/profile.d/cowork-proxy.sh", "permissions": "0644",
				"content": "# cowork: the guest's traffic goes through the auditing proxy on the gateway.\nexport " + proxyEnv + "\n"},
			map[string]any{"path": "/etc/apt/apt.conf.d/95cowork-proxy", "permissions": "0644",
				"content": fmt.Sprintf("Acquire::http::Proxy %q;\nAcquire::https::Proxy %q;\nAcquire::Languages \"none\";\n", g.ProxyURL, g.ProxyURL)},
		)
	}
	cfg := map[string]any{
		"hostname":         g.Hostname,
		"manage_etc_hosts": true,
		"users": []map[string]any{{
			"name":        g.User,
			"uid":         g.UID,
			"groups":      []string{"sudo", "adm"},
			"shell":       "/bin/bash",
			"sudo":        "ALL=(ALL) NOPASSWD:ALL",
			"lock_passwd": true,
		}},
		"mounts": [][]string{{g.ShareTag, "/workspace", "virtiofs", "rw,relatime,nofail", "0", "0"}},
		// The agent first: it is how the host follows the rest.
		"bootcmd":         []string{installAgentScript, grubConsoleScript("/etc/default/grub.d")},
		"write_files":     files,
		"growpart":        map[string]any{"mode": "auto", "devices": []string{"/"}},
		"resize_rootfs":   true,
		"package_update":  len(g.Packages) > 0,
		"packages":        g.Packages,
		"runcmd":          [][]string{{"/usr/local/lib/cowork/provision"}},
		"final_message":   "cowork: provisioning finished after $UPTIME seconds",
		"ssh_pwauth":      false,
		"disable_root":    true,
		"package_upgrade": false,
	}
	b, err := yaml.Marshal(cfg)
	if err != nil {
		return nil, err
	}
	return append([]byte("#cloud-config\n"), b...), nil
}

func dirOf(p string) string {
	if i := strings.LastIndexByte(p, '/'); i > 0 {
		return p[:i]
	}
	return "/"
}

// installAgentScript runs at every boot, before anything else cloud-init
// does: it installs the agent from the cidata disk when the host brought a
// different one, and starts it under systemd.
var installAgentScript = `set -e
src=/run/cowork-cidata
mkdir -p $src
mount -o ro LABEL=cidata $src 2>/dev/null || mount -o ro /dev/disk/by-label/CIDATA $src
want=$(cat $src/` + cidataSumName + `)
have=$(sha256sum ` + AgentPath + ` 2>/dev/null | cut -d' ' -f1 || true)
if [ "$want" != "$have" ]; then
  install -m 0755 $src/` + cidataAgentName + ` ` + AgentPath + `.new
  mv ` + AgentPath + `.new ` + AgentPath + `
fi
umount $src
cat > /etc/systemd/system/` + AgentUnit + ` <<'UNIT'
[Unit]
Description=cowork guest agent
After=systemd-udevd.service local-fs.target
Before=cloud-final.service

[Service]
ExecStart=` + AgentPath + ` --listen auto --default-user cowork --provisioned-marker ` + DefaultMarker + `
Restart=always
RestartSec=1

[Install]
WantedBy=multi-user.target
UNIT
systemctl daemon-reload
systemctl enable ` + AgentUnit + `
if [ "$want" != "$have" ]; then systemctl restart --no-block ` + AgentUnit + `; else systemctl start --no-block ` + AgentUnit + `; fi
`

// MetaData is the NoCloud meta-data: a new instance-id each time the ISO
// is made would rerun cloud-init's first-boot modules, so it is the
// instance's own, stable.
func MetaData(instanceID, hostname string) []byte {
	return []byte("instance-id: " + strconv.Quote(instanceID) + "\nlocal-hostname: " + hostname + "\n")
}

// NetworkConfig names the NIC with mac eth0 and asks for DHCP on it
// (version 1: every renderer, netplan or ifupdown, takes it).
func NetworkConfig(mac string) []byte {
	return []byte(`version: 1
config:
  - type: physical
    name: eth0
    mac_address: "` + strings.ToLower(mac) + `"
    subnets:
      - type: dhcp
`)
}
