package image

import (
	"encoding/json"
	"fmt"
	"slices"
	"strings"
)

// WithDocker is g provisioned with Docker Engine as well, after the rest:
// the distribution's package (Ubuntu's universe and Debian both name it
// docker.io), installed by apt through the auditing proxy like the rest,
// no third-party repository or key to trust; then the daemon's pulls and
// the containers' tools sent through that proxy, and g's user let run
// docker without sudo.
func WithDocker(g Guest) Guest {
	g.Provision = append(slices.Clip(g.Provision), dockerProvision(g))
	return g
}

// dockerProvision installs Docker Engine and configures it for g. Pulls are
// made by dockerd, which reads no profile: a systemd drop-in gives it the
// proxy. Containers (docker run, and RUN steps of docker build) get the
// proxy from the client's config.json, root's and the user's. Every step
// is safe to repeat (the provisioning script may run again).
func dockerProvision(g Guest) string {
	var b strings.Builder
	// step (the provisioning script's) names what runs for init's progress.
	b.WriteString("step installing Docker Engine\n")
	if len(g.Packages) == 0 { // the packages' step updated the lists, if any
		b.WriteString(aptGet + " update\n")
	}
	// Without its recommends, which add perl, git and needrestart (it
	// restarts services after apt runs), but with the one Docker needs on
	// a kernel that enforces AppArmor (Ubuntu's, Debian's): the parser
	// that loads its containers' profile, or no container starts.
	b.WriteString(aptGet + " install --no-install-recommends docker.io apparmor\n")
	b.WriteString("step configuring Docker Engine\n")
	if g.ProxyURL != "" {
		dropIn := fmt.Sprintf("[Service]\nEnvironment=\"HTTP_PROXY=%[1]s\" \"HTTPS_PROXY=%[1]s\" \"NO_PROXY=%[2]s\"\n", g.ProxyURL, g.NoProxy)
		b.WriteString("mkdir -p /etc/systemd/system/docker.service.d\n")
		b.WriteString("printf '%s' " + shQuote(dropIn) + " >/etc/systemd/system/docker.service.d/cowork-proxy.conf\n")
		client, _ := json.MarshalIndent(map[string]any{"proxies": map[string]any{"default": map[string]string{
			"httpProxy": g.ProxyURL, "httpsProxy": g.ProxyURL, "noProxy": g.NoProxy,
		}}}, "", "  ")
		home := "/home/" + g.User
		for _, dir := range []string{"/root/.docker", home + "/.docker"} {
			b.WriteString("mkdir -p " + dir + "\nprintf '%s\\n' " + shQuote(string(client)) + " >" + dir + "/config.json\n")
		}
		b.WriteString("chown -R " + g.User + ": " + home + "/.docker\n")
	}
	b.WriteString("usermod -aG docker " + g.User + "\n")
	// A daemon that fails to start (a kernel without overlay or netfilter)
	// fails no provisioning: the guest is made, and hostd's wait for
	// docker before ready says it did not start.
	b.WriteString("systemctl daemon-reload\nsystemctl enable docker.service\nsystemctl restart docker.service || true\n")
	return b.String()
}
