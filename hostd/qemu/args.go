package qemu

import (
	"cmp"
	"fmt"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/coworkhq/cowork/hostd/machine"
	"github.com/coworkhq/cowork/internal/agentwire"
)

// agentPortID names the agent's port device in QMP events.
const agentPortID = "agentport"

// A share's device, its vhost-user chardev and the PCIe root port it
// sits behind have fixed ids, which QMP names when hostd unplugs the
// shares before a save and plugs them back after a restore: these for the
// first (the workspace), numbered after them for the others (shareIDs).
// The root port is what makes a share unpluggable at all: the root bus
// (pcie.0) of arm64's virt and x86's q35 takes no hotplug.
const (
	sharePortID    = "shareport"
	shareDeviceID  = "share"
	shareChardevID = "virtiofs"
)

// shareIDs are share i's ids: its root port's, its device's, its chardev's.
func shareIDs(i int) (port, device, chardev string) {
	if i == 0 {
		return sharePortID, shareDeviceID, shareChardevID
	}
	n := strconv.Itoa(i)
	return sharePortID + n, shareDeviceID + n, shareChardevID + n
}

// shareIndex is the index of the share whose device id is id, or -1.
func shareIndex(c *machine.Config, id string) int {
	for i := range c.Shares {
		if _, dev, _ := shareIDs(i); dev == id {
			return i
		}
	}
	return -1
}

// networkFD, consoleFD and ramFD are the descriptors QEMU inherits the
// network socket, the console's pipe and the guest's RAM (a memfd hostd
// made) as: exec.Cmd.ExtraFiles in this order.
const (
	networkFD = 3
	consoleFD = 4
	ramFD     = 5
)

// launch is what a run of QEMU adds to the Config: whether it loads a
// saved guest (-incoming defer: QEMU waits, paused, for migrate-incoming;
// the share is left out, as it was when the guest was saved, and plugged
// back afterwards).
type launch struct {
	accel        string
	firmwareCode string
	incoming     bool
}

// runPaths are the sockets QEMU and virtiofsd make in the run directory.
type runPaths struct{ dir string }

func (r runPaths) qmp() string   { return filepath.Join(r.dir, "qmp.sock") }
func (r runPaths) agent() string { return filepath.Join(r.dir, "agent.sock") }

// virtiofs is share i's vhost-user socket; virtiofsLog, its server's log.
func (r runPaths) virtiofs(i int) string {
	return filepath.Join(r.dir, numbered("virtiofs", i)+".sock")
}
func (r runPaths) virtiofsLog(i int) string {
	return filepath.Join(r.dir, numbered("virtiofsd", i)+".log")
}
func (r runPaths) pid() string { return filepath.Join(r.dir, "qemu.pid") }

// numbered is name for the first share, name and i after it.
func numbered(name string, i int) string {
	if i == 0 {
		return name
	}
	return name + strconv.Itoa(i)
}

// binary is the QEMU system emulator for a guest architecture.
func binary(arch string) string {
	if arch == "arm64" {
		return "qemu-system-aarch64"
	}
	return "qemu-system-x86_64"
}

// efiFirmware is an EFI code image and the empty variable store a new
// instance's starts as ("" for a blank one of the code's flash size).
type efiFirmware struct{ code, vars string }

// firmware lists, best first, the EFI firmware for a guest architecture:
// from Debian's qemu-efi-aarch64 and ovmf packages, or Homebrew's qemu on
// a Mac. Debian's QEMU_EFI.fd has no VARS twin (and is not padded to the
// flash size): the last resort, with a blank store.
var firmware = map[string][]efiFirmware{
	"arm64": {
		{"/usr/share/AAVMF/AAVMF_CODE.fd", "/usr/share/AAVMF/AAVMF_VARS.fd"},
		{"/opt/homebrew/share/qemu/edk2-aarch64-code.fd", "/opt/homebrew/share/qemu/edk2-arm-vars.fd"},
		{"/usr/share/qemu-efi-aarch64/QEMU_EFI.fd", ""},
	},
	"amd64": {
		{"/usr/share/OVMF/OVMF_CODE_4M.fd", "/usr/share/OVMF/OVMF_VARS_4M.fd"},
		{"/usr/share/OVMF/OVMF_CODE.fd", "/usr/share/OVMF/OVMF_VARS.fd"},
		{"/opt/homebrew/share/qemu/edk2-x86_64-code.fd", "/opt/homebrew/share/qemu/edk2-i386-vars.fd"},
	},
}

// args is QEMU's command line for a config: a pure translation, nothing
// decided here but the device model.
func args(c *machine.Config, l launch) []string {
	accel, firmwareCode := l.accel, l.firmwareCode
	r := runPaths{c.RunDir}
	memMiB := c.Memory >> 20
	a := []string{
		"-nodefaults", "-no-user-config", "-nographic",
		// A guest reboot (or a panic, with panic=-1) ends the VM, as it does
		// under vz: hostd reports why instead of a silent loop of boots.
		"-no-reboot",
		"-name", "cowork",
		// QEMU's own seccomp filter: a guest that broke into QEMU could
		// still not run programs, gain privileges or use obsolete calls.
		"-sandbox", "on,obsolete=deny,elevateprivileges=deny,spawn=deny,resourcecontrol=deny",
		"-accel", accel,
		"-smp", fmt.Sprint(c.CPUs),
		"-m", fmt.Sprintf("%dM", memMiB),
	}
	// The guest's RAM is a memfd hostd made and QEMU maps shared: virtiofsd
	// needs it shared, and hostd reads it to save a guest (and fills a new
	// one to restore it) while QEMU's migration stream carries only the
	// devices (capability x-ignore-shared). hostd never maps it.
	const ram = ",memory-backend=mem"
	switch c.Arch {
	case "arm64":
		a = append(a, "-M", "virt,gic-version=max"+ram)
		if accel == "kvm" {
			a = append(a, "-cpu", "host")
		} else {
			a = append(a, "-cpu", "cortex-a57")
		}
	default:
		a = append(a, "-M", "q35"+ram)
		if accel == "kvm" {
			a = append(a, "-cpu", "host")
		} else {
			a = append(a, "-cpu", "max")
		}
	}

	switch {
	case c.Kernel != "" && l.incoming && c.Arch == "arm64":
		// A loaded guest's kernel is in its memory already: QEMU would
		// only decompress the file again (0.4 s of a 0.5 s launch) to put
		// it where the loaded RAM goes, which an incoming migration skips
		// anyway. On arm64 the kernel adds no device or RAM block; on x86
		// it adds an option ROM, whose RAM block the stream expects.
	case c.Kernel != "":
		a = append(a, "-kernel", c.Kernel)
		if c.Initrd != "" {
			a = append(a, "-initrd", c.Initrd)
		}
		a = append(a, "-append", c.Cmdline)
	default:
		a = append(a,
			"-drive", "if=pflash,format=raw,readonly=on,file="+escape(firmwareCode),
			"-drive", "if=pflash,format=raw,file="+escape(c.EFIVars))
	}

	// The firmware boots the root disk first. With -kernel there is no
	// choice to make, and on x86 QEMU's linuxboot option ROM takes
	// bootindex 0 itself: giving it to the disk too stops QEMU at start.
	disk := "virtio-blk-pci,drive=disk"
	if c.Kernel == "" {
		disk += ",bootindex=0"
	}
	a = append(a,
		"-drive", "if=none,id=disk,format="+cmp.Or(c.DiskFormat, "raw")+",cache=writeback,discard=unmap,file="+escape(c.Disk),
		"-device", disk)
	if c.CIData != "" {
		a = append(a,
			"-drive", "if=none,id=cidata,format=raw,readonly=on,file="+escape(c.CIData),
			"-device", "virtio-blk-pci,drive=cidata")
	}

	a = append(a, "-object", fmt.Sprintf("memory-backend-file,id=mem,mem-path=/dev/fd/%d,share=on,size=%dM", ramFD, memMiB))
	for i := range c.Shares {
		a = append(a, "-device", rootPort(i))
		if !l.incoming {
			a = append(a,
				"-chardev", shareChardev(r, i),
				"-device", shareDevice(c, i))
		}
	}

	a = append(a,
		"-netdev", fmt.Sprintf("dgram,id=net,local.type=fd,local.str=%d", networkFD),
		"-device", "virtio-net-pci,netdev=net,mac="+c.MAC.String(),
		"-device", "virtio-serial-pci,id=vser",
		"-chardev", "socket,id=agent,path="+escape(r.agent())+",server=on,wait=off",
		"-device", "virtserialport,bus=vser.0,chardev=agent,id="+agentPortID+",name="+agentwire.SerialPort,
		"-device", "virtio-rng-pci",
		// The console goes into hostd's pipe, which hostd drains into a
		// capped log: QEMU opens the inherited descriptor by its path.
		"-chardev", fmt.Sprintf("file,id=console,path=/dev/fd/%d", consoleFD),
		"-serial", "chardev:console",
		"-qmp", "unix:"+escape(r.qmp())+",server=on,wait=off",
		"-pidfile", r.pid(),
	)
	if l.incoming {
		// -S: a loaded guest stays paused until hostd says cont.
		a = append(a, "-S", "-incoming", "defer")
	}
	return a
}

// rootPort is the -device of share i's PCIe root port. Each root port
// needs a chassis and slot of its own: the first takes the defaults (as
// it always did, so a saved guest's still fits), the others chassis i.
func rootPort(i int) string {
	port, _, _ := shareIDs(i)
	if i == 0 {
		return "pcie-root-port,id=" + port
	}
	return "pcie-root-port,id=" + port + ",chassis=" + strconv.Itoa(i)
}

// shareChardev is the -chardev of share i's vhost-user socket.
func shareChardev(r runPaths, i int) string {
	_, _, chardev := shareIDs(i)
	return "socket,id=" + chardev + ",path=" + escape(r.virtiofs(i))
}

// shareDevice is the -device of share i, behind its root port.
func shareDevice(c *machine.Config, i int) string {
	port, dev, chardev := shareIDs(i)
	return "vhost-user-fs-pci,id=" + dev + ",bus=" + port + ",chardev=" + chardev + ",tag=" + escape(c.Shares[i].Tag)
}

// escape doubles commas, QEMU's option separator, in a path.
func escape(p string) string { return strings.ReplaceAll(p, ",", ",,") }
