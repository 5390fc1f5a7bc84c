package image

import (
	"fmt"
	"strconv"
	"strings"

	"gopkg.in/yaml.v3"

	"github.com/coworkhq/cowork/hostd/claudecode"
	"github.com/coworkhq/cowork/internal/agentwire"
)

// Guest is what the cloud-config sets up in a new guest.
type Guest struct {
	Hostname string
	User     string // the guest user commands and Claude Code run as
	UID      int    // the host user's uid, so shared files have one owner
	// ShareTag is the virtiofs tag mounted at /workspace; empty (a
	// cluster's guest) makes /workspace a folder of the guest's own disk,
	// the user's.
	ShareTag string
	// ProxyURL is the auditing proxy the guest's tools use.
	ProxyURL string
	NoProxy  string
	// Packages are installed from the distribution; Provision runs after
	// them (Node.js, Claude Code), as root, with the proxy set.
	Packages  []string
	Provision []string
	// Marker is the file the agent reports as provisioning complete;
	// empty means agentwire.ProvisionedMarker, the agent's default.
	Marker string
	// MAC is the address of the guest's NIC, which the network config
	// names eth0 and configures by DHCP.
	MAC string
	// AgentURL and AgentSum are where a guest whose seed holds no agent
	// (a cluster's: see kubevirt) fetches the host's, and its sha256; the
	// agent's update script installs it only if the sum matches.
	AgentURL, AgentSum string
}

// Paths in the guest that the cloud-config and the agent's unit share.
const (
	AgentPath       = "/usr/local/bin/cowork-agent"
	AgentUnit       = "cowork-agent.service"
	CIDataAgentName = "cowork-agent"
	CIDataSumName   = "cowork-agent.sha256"
)

// DefaultPackages are the seed's toolchain, by Ubuntu 22.04's names.
var DefaultPackages = []string{
	"python3", "python3-pip", "python3-venv", "build-essential", "openjdk-11-jdk-headless",
	"git", "curl", "wget", "ripgrep", "fd-find", "fzf", "bat", "sqlite3", "postgresql-client",
	"ca-certificates", "gnupg", "unzip", "jq",
}

// DefaultProvision installs Node.js 22 from NodeSource and the Claude Code
// release cowork is tested against (whose flags `ask` forwards) from npm,
// and gives fd and bat their usual names.
var DefaultProvision = []string{
	"curl -fsSL https://deb.nodesource.com/setup_22.x | bash -",
	"apt-get install -y nodejs",
	"npm install -g @anthropic-ai/claude-code@" + claudecode.Version,
	"ln -sf /usr/bin/fdfind /usr/local/bin/fd",
	"ln -sf /usr/bin/batcat /usr/local/bin/bat",
}

// UserData is the cloud-config for g.
func UserData(g Guest) ([]byte, error) {
	if g.User == "" || g.UID <= 0 || g.Hostname == "" {
		return nil, fmt.Errorf("cloud-config: need a user, a uid above 0 and a hostname")
	}
	if g.Marker == "" {
		g.Marker = agentwire.ProvisionedMarker
	}
	proxyEnv := proxyEnvOf(g)
	for _, c := range g.Provision {
		for _, l := range strings.Split(c, "\n") {
			if strings.TrimSpace(l) == heredocTag {
				return nil, fmt.Errorf("cloud-config: a provisioning command holds the line %s, which cowork's boot script reserves", heredocTag)
			}
		}
	}

	var files []map[string]any
	for _, f := range proxyFiles(g, proxyEnv) {
		files = append(files, map[string]any{"path": f.path, "permissions": "0644", "content": f.content})
	}
	if g.AgentURL != "" {
		if !strings.HasPrefix(g.AgentURL, "http://") || strings.ContainsAny(g.AgentURL, " \n\t'\"") || len(g.AgentSum) != 64 || strings.Trim(g.AgentSum, "0123456789abcdef") != "" {
			return nil, fmt.Errorf("cloud-config: agent source %q %q: want an http:// URL without spaces or quotes, and a sha256 in hex", g.AgentURL, g.AgentSum)
		}
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
		// At every boot: the agent first (it is how the host follows the
		// rest), then provisioning until done (see guestunits.go), and the
		// virtio console for grub-booted guests.
		"bootcmd":         []string{installScript(g, proxyEnv), identityScript, grubConsoleScript("/etc/default/grub.d")},
		"growpart":        map[string]any{"mode": "auto", "devices": []string{"/"}},
		"resize_rootfs":   true,
		"final_message":   "cowork: cloud-init finished after $UPTIME seconds",
		"ssh_pwauth":      false,
		"disable_root":    true,
		"package_upgrade": false,
	}
	if len(files) > 0 {
		cfg["write_files"] = files
	}
	if g.ShareTag != "" {
		cfg["mounts"] = [][]string{{g.ShareTag, "/workspace", "virtiofs", "rw,relatime,nofail", "0", "0"}}
	}
	b, err := yaml.Marshal(cfg)
	if err != nil {
		return nil, err
	}
	return append([]byte("#cloud-config\n"), b...), nil
}

// guestFile is a file the guest's boot writes.
type guestFile struct{ path, content string }

// proxyFiles send g's tools through its proxy: the login shells'
// environment and apt's; none without a proxy.
func proxyFiles(g Guest, proxyEnv string) []guestFile {
	if g.ProxyURL == "" {
		return nil
	}
	return []guestFile{
		{"/etc/profile.d/cowork-proxy.sh", "# cowork: the guest's traffic goes through the auditing proxy.\nexport " + proxyEnv + "\n"},
		{"/etc/apt/apt.conf.d/95cowork-proxy", fmt.Sprintf("Acquire::http::Proxy %q;\nAcquire::https::Proxy %q;\nAcquire::Languages \"none\";\n", g.ProxyURL, g.ProxyURL)},
	}
}

// proxyEnv is the environment that sends g's tools through the proxy.
func proxyEnvOf(g Guest) string {
	return fmt.Sprintf("http_proxy=%[1]s https_proxy=%[1]s HTTP_PROXY=%[1]s HTTPS_PROXY=%[1]s no_proxy=%[2]s NO_PROXY=%[2]s npm_config_proxy=%[1]s npm_config_https_proxy=%[1]s", g.ProxyURL, g.NoProxy)
}

// ProvisionScriptOf is the script that provisions g at its first boot: its
// packages, commands and proxy settings, all that provisioning leaves on
// the disk depends on (a golden disk's key hashes it).
func ProvisionScriptOf(g Guest) string {
	if g.Marker == "" {
		g.Marker = agentwire.ProvisionedMarker
	}
	return provisionScript(g, proxyEnvOf(g))
}

// identityScript gives a guest whose disk was cloned (from a golden disk,
// or by `cowork clone`) a machine-id of its own. cloud-init runs it at
// every boot with the instance's id in $INSTANCE_ID; a disk that last
// booted as another instance gets a new machine-id (and D-Bus's copy of
// it, when that is a file of its own), as a fresh image gets one at its
// first boot. cloud-init itself gives such a guest new ssh host keys.
const identityScript = `f=/var/lib/cowork/instance-id
if [ -n "${INSTANCE_ID:-}" ] && [ "$(cat $f 2>/dev/null)" != "$INSTANCE_ID" ]; then
  if [ -s $f ]; then
    rm -f /etc/machine-id
    if [ -f /var/lib/dbus/machine-id ] && [ ! -L /var/lib/dbus/machine-id ]; then rm -f /var/lib/dbus/machine-id; fi
    systemd-machine-id-setup >/dev/null 2>&1 || dbus-uuidgen --ensure=/etc/machine-id
  fi
  mkdir -p /var/lib/cowork && echo "$INSTANCE_ID" >$f.new && mv $f.new $f
fi`

func dirOf(p string) string {
	if i := strings.LastIndexByte(p, '/'); i > 0 {
		return p[:i]
	}
	return "/"
}

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
