package image

import (
	"strconv"
	"strings"

	"github.com/coworkhq/cowork/internal/agentwire"
)

// The guest side of cowork is three files that bootcmd (re)writes at every
// boot, so that each boot runs what the host brought on the cidata disk:
//
//   - cowork-agent.service, whose ExecStartPre installs the agent from the
//     cidata disk when its sha256 differs from the installed one: the
//     agent that starts is always the host's, with no older one first;
//   - cowork-provision.service, a oneshot that runs the provisioning
//     script at every boot until the script makes the marker. cloud-init
//     marks its per-instance modules (packages, runcmd) done before it runs
//     them, so a first boot cut short would never finish them; this unit
//     does, picking up with `dpkg --configure -a`;
//   - the provisioning script, which writes what it is doing to
//     agentwire.ProvisionStepFile for the agent to report.
//
// The unit's name and the step file are agentwire's, since the agent
// reads them to report provisioning to the host.
const (
	ProvisionScript = "/usr/local/lib/cowork/provision"
	agentUpdatePath = "/usr/local/lib/cowork/agent-update"
	agentSumPath    = "/usr/local/lib/cowork/agent.sha256" // "SUM SIZE" of the installed agent
	unitDir         = "/etc/systemd/system/"
	// AgentSourcePath is where a guest whose seed holds no agent (a
	// cluster's) finds "URL SHA256" of the host's (Guest.AgentURL).
	AgentSourcePath = "/etc/cowork/agent-source"
)

// AgentDownload is the path at which a cluster's egress proxy serves the
// agent for a guest of arch (cowork-hostd egress): its guests fetch it
// from there (Guest.AgentURL).
func AgentDownload(arch string) string { return "/cowork-agent/linux-" + arch }

// agentUnit starts the agent early and restarts it on failure. Early:
// without the default dependencies it waits for no network and not for
// the rest of basic.target, only for udev (which loads its channel's
// driver and names the cidata disk) and the local file systems; its
// ExecStartPre then waits for the channel itself. It comes before
// cloud-init's final stage and provisioning, which the host follows
// through it. The leading "-" lets an installed agent start even when the
// cidata disk is missing. It is restarted however often it fails
// (StartLimitIntervalSec=0): systemd's default gives up after 5 starts in
// 10 s, and a guest without its agent cannot be reached at all.
func agentUnit(marker string) string {
	return `[Unit]
Description=cowork guest agent
DefaultDependencies=no
Wants=systemd-udevd.service systemd-udev-trigger.service
After=systemd-udevd.service systemd-udev-trigger.service local-fs.target systemd-journald.socket
Before=cloud-final.service ` + agentwire.ProvisionUnit + ` shutdown.target
Conflicts=shutdown.target
StartLimitIntervalSec=0

[Service]
ExecStartPre=-` + agentUpdatePath + `
ExecStart=` + AgentPath + ` --listen ` + agentwire.ListenAuto + ` --default-user cowork --provisioned-marker ` + marker + `
Restart=always
RestartSec=1

[Install]
WantedBy=multi-user.target
`
}

// agentUpdateScript runs before the agent: it waits for the agent's
// channel (a vsock transport, or the virtio-serial port), whose driver
// udev may still be loading this early, and installs the agent from the
// cidata disk when its sha256 differs from the installed one's, through a
// rename so that a power cut never leaves half a binary.
var agentUpdateScript = `#!/bin/sh
# cowork: wait for the agent's channel; install the host's agent from the
# cidata disk (or, on a cluster, from the URL in ` + AgentSourcePath + `)
# before it starts.
set -eu
for i in $(seq 100); do
  [ -d /sys/module/vmw_vsock_virtio_transport ] && break
  grep -qsx ` + agentwire.SerialPort + ` /sys/class/virtio-ports/*/name && break
  sleep 0.1
done
dev=
for i in $(seq 100); do # udev may not have named the disk yet
  for d in /dev/disk/by-label/cidata /dev/disk/by-label/CIDATA; do
    if [ -e "$d" ]; then dev=$d; break 2; fi
  done
  sleep 0.1
done
src= got=
trap '[ -z "$src" ] || { umount "$src" 2>/dev/null; rmdir "$src"; }; [ -z "$got" ] || rm -f "$got"' EXIT
if [ -n "$dev" ]; then
  src=$(mktemp -d /run/cowork-cidata.XXXXXX)
  mount -o ro "$dev" "$src" || { rmdir "$src"; src=; }
fi
url=
if [ -n "$src" ] && [ -f "$src/` + CIDataSumName + `" ]; then
  want=$(cat "$src/` + CIDataSumName + `")
  from="$src/` + CIDataAgentName + `"
elif [ -r ` + AgentSourcePath + ` ]; then
  # A cluster's seed holds no agent (a Secret is too small): the
  # namespace's egress proxy serves the host's, checked against its sum.
  read -r url want <` + AgentSourcePath + `
  from=
else
  echo "cowork: no agent on the cidata disk, and no source; keeping the installed agent" >&2
  exit 0
fi
# Hashing the installed agent took seconds under emulation: the sum and
# size recorded when it was installed stand for it while it has that size.
have=
if [ -x ` + AgentPath + ` ] && read -r sum size <` + agentSumPath + ` 2>/dev/null &&
  [ "$(stat -c %s ` + AgentPath + `)" = "$size" ]; then have=$sum; fi
if [ "$want" != "$have" ]; then
  if [ -n "$url" ]; then
    got=$(mktemp /run/cowork-agent.XXXXXX)
    curl -fsS --noproxy '*' --connect-timeout 5 --max-time 60 --retry 30 --retry-delay 1 --retry-all-errors -o "$got" "$url"
    if [ "$(sha256sum "$got" | cut -d' ' -f1)" != "$want" ]; then
      echo "cowork: the agent from $url is not the one the host expects ($want); keeping the installed agent" >&2
      exit 1
    fi
    from=$got
  fi
  install -m 0755 "$from" ` + AgentPath + `.new
  mv ` + AgentPath + `.new ` + AgentPath + `
  echo "$want $(stat -c %s ` + AgentPath + `)" >` + agentSumPath + `.new
  mv ` + agentSumPath + `.new ` + agentSumPath + `
  echo "cowork: installed agent $want"
fi
`

// provisionUnit runs the provisioning script at every boot until the
// marker exists; cloud-init's final stage (and with it boot-finished)
// waits for it, so "cloud-init finished" still means "provisioning ended".
func provisionUnit(marker string) string {
	return `[Unit]
Description=cowork first-boot provisioning (runs at every boot until done)
ConditionPathExists=!` + marker + `
Wants=network-online.target
After=network-online.target cloud-config.service ` + AgentUnit + `
Before=cloud-final.service

[Service]
Type=oneshot
ExecStart=` + ProvisionScript + `
TimeoutStartSec=0
StandardOutput=journal+console
StandardError=inherit
LogRateLimitIntervalSec=0

[Install]
WantedBy=multi-user.target
`
}

// aptGet is apt-get as provisioning runs it: quiet, unattended, waiting
// for the dpkg lock (apt-daily runs at first boot too), keeping the
// configuration files a package finds.
const aptGet = "apt-get -q -y -o DPkg::Lock::Timeout=600 -o Dpkg::Options::=--force-confold"

// provisionScript installs g's packages, runs its commands and makes the
// marker. It may run again after an interrupted boot, so each step must be
// safe to repeat (apt and the default commands are).
func provisionScript(g Guest, proxyEnv string) string {
	var b strings.Builder
	b.WriteString("#!/bin/sh\n# cowork: first-boot provisioning, run by " + agentwire.ProvisionUnit + " until it makes " + g.Marker + ".\nset -eux\n")
	b.WriteString("step() { mkdir -p " + dirOf(agentwire.ProvisionStepFile) + "; echo \"$*\" >" + agentwire.ProvisionStepFile + "; }\n")
	b.WriteString("export DEBIAN_FRONTEND=noninteractive\n")
	if g.ProxyURL != "" {
		b.WriteString("export " + proxyEnv + "\n")
	}
	// An earlier boot may have stopped inside dpkg; dpkg takes no lock
	// timeout, so wait out whoever holds the lock (apt-daily at first boot).
	b.WriteString("step finishing interrupted package installs\n" +
		"i=0\nuntil dpkg --configure -a; do i=$((i+1)); [ $i -lt 60 ] || exit 1; sleep 5; done\n")
	if len(g.Packages) > 0 {
		b.WriteString("step updating package lists\n" + aptGet + " update\n")
		b.WriteString("step installing packages\n" + aptGet + " install " + strings.Join(g.Packages, " ") + "\n")
	}
	for _, c := range g.Provision {
		b.WriteString("step " + shQuote("running "+firstLine(c)) + "\n" + c + "\n")
	}
	b.WriteString("step finishing\nmkdir -p " + dirOf(g.Marker) + "\ntouch " + g.Marker + "\nsync\nrm -f " + agentwire.ProvisionStepFile + "\n")
	return b.String()
}

// installScript is the bootcmd: it writes the scripts and units, enables
// them and starts them without waiting (systemd orders them). An agent
// whose unit changed restarts, so its new ExecStartPre runs.
func installScript(g Guest, proxyEnv string) string {
	var b strings.Builder
	b.WriteString("set -e\nsource_changed=\nmkdir -p " + dirOf(agentUpdatePath) + "\n")
	// put writes path through path.new (a power cut leaves the old file or
	// the new) and sets the shell variable changed when the content changed.
	put := func(path, mode, content string) {
		b.WriteString("cat >" + path + ".new <<'" + heredocTag + "'\n" + content + heredocTag + "\n")
		b.WriteString("chmod " + mode + " " + path + ".new\n")
		b.WriteString("changed=\nif cmp -s " + path + ".new " + path + "; then rm " + path + ".new; else mv " + path + ".new " + path + "; changed=1; fi\n")
	}
	put(agentUpdatePath, "0755", agentUpdateScript)
	put(ProvisionScript, "0755", provisionScript(g, proxyEnv))
	put(unitDir+agentwire.ProvisionUnit, "0644", provisionUnit(g.Marker))
	if g.AgentURL != "" {
		// A cluster's guest: where its agent comes from, and its proxy,
		// can change between boots (another build, the proxy's Service
		// made again); cloud-init's write_files runs once per instance.
		// From the second boot on the agent has started before this
		// script runs, from the last boot's source: a new source restarts
		// it, and its update script fetches the new agent.
		b.WriteString("mkdir -p " + dirOf(AgentSourcePath) + "\n")
		put(AgentSourcePath, "0644", g.AgentURL+" "+g.AgentSum+"\n")
		b.WriteString("source_changed=$changed\n")
		for _, f := range proxyFiles(g, proxyEnv) {
			put(f.path, "0644", f.content)
		}
	}
	if g.ShareTag == "" {
		// No share: /workspace is the guest's own folder, the user's.
		b.WriteString("mkdir -p /workspace && chown " + strconv.Itoa(g.UID) + " /workspace\n")
	}
	put(unitDir+AgentUnit, "0644", agentUnit(g.Marker)) // last: $changed is the agent unit's
	b.WriteString("systemctl daemon-reload\n" +
		"systemctl enable " + AgentUnit + " " + agentwire.ProvisionUnit + "\n" +
		"if [ -n \"$changed$source_changed\" ]; then systemctl restart --no-block " + AgentUnit + "; else systemctl start --no-block " + AgentUnit + "; fi\n" +
		"systemctl start --no-block " + agentwire.ProvisionUnit + "\n")
	return b.String()
}

// heredocTag ends each file in installScript; no provisioning command may
// hold it as a line of its own.
const heredocTag = "COWORK_EOF"

// shQuote quotes s for sh.
func shQuote(s string) string { return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'" }

func firstLine(s string) string {
	s, _, _ = strings.Cut(strings.TrimSpace(s), "\n")
	if len(s) > 60 {
		s = s[:57] + "..."
	}
	return s
}
