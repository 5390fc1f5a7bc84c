package qemu

import (
	"net"
	"os"
	"slices"
	"strings"
	"testing"

	"github.com/coworkhq/cowork/hostd/machine"
	"github.com/coworkhq/cowork/internal/agentwire"
)

func config() machine.Config {
	return machine.Config{
		Arch: "arm64", CPUs: 2, Memory: 1 << 30,
		Disk: "/i/disk.raw", CIData: "/i/cidata.iso",
		Kernel: "/i/kernel", Initrd: "/i/initrd", Cmdline: "console=ttyAMA0 quiet",
		Shares:  []machine.Share{{Dir: "/home/me/ws", Tag: "workspace"}},
		Network: os.Stdin, MAC: net.HardwareAddr{0x52, 0x54, 1, 2, 3, 4},
		Console: os.Stdout, RunDir: "/i/run",
	}
}

// has reports whether args contain flag followed by a value containing want.
func has(args []string, flag, want string) bool {
	for i := 0; i+1 < len(args); i++ {
		if args[i] == flag && strings.Contains(args[i+1], want) {
			return true
		}
	}
	return false
}

func TestArgsKernelBoot(t *testing.T) {
	c := config()
	a := args(&c, launch{accel: "tcg"})
	for _, want := range [][2]string{
		{"-accel", "tcg"}, {"-smp", "2"}, {"-m", "1024M"}, {"-M", "virt"}, {"-cpu", "cortex-a57"},
		{"-kernel", "/i/kernel"}, {"-initrd", "/i/initrd"}, {"-append", "console=ttyAMA0 quiet"},
		{"-drive", "file=/i/disk.raw"}, {"-drive", "readonly=on,file=/i/cidata.iso"},
		{"-object", "memory-backend-file,id=mem,mem-path=/dev/fd/5,share=on,size=1024M"},
		{"-M", "virt,gic-version=max,memory-backend=mem"},
		{"-device", "pcie-root-port,id=shareport"},
		{"-chardev", "socket,id=virtiofs,path=/i/run/virtiofs.sock"},
		{"-device", "vhost-user-fs-pci,id=share,bus=shareport,chardev=virtiofs,tag=workspace"},
		{"-netdev", "dgram,id=net,local.type=fd,local.str=3"},
		{"-device", "mac=52:54:01:02:03:04"},
		{"-device", "id=agentport,name=" + agentwire.SerialPort},
		{"-chardev", "path=/i/run/agent.sock,server=on,wait=off"},
		{"-chardev", "file,id=console,path=/dev/fd/4"}, {"-serial", "chardev:console"},
		{"-qmp", "unix:/i/run/qmp.sock,server=on,wait=off"},
		{"-sandbox", "on,obsolete=deny,elevateprivileges=deny,spawn=deny,resourcecontrol=deny"},
	} {
		if !has(a, want[0], want[1]) {
			t.Errorf("no %s %s in %q", want[0], want[1], a)
		}
	}
	if slices.Contains(a, "if=pflash") || has(a, "-drive", "pflash") {
		t.Error("kernel boot with EFI firmware")
	}
}

// On x86, -kernel's option ROM holds bootindex 0: QEMU refuses to start
// when the disk asks for it too ("The bootindex 0 has already been used"),
// which is how the amd64 test guest failed on a fresh machine. EFI boots
// keep it, so the firmware picks the root disk over the seed.
func TestArgsBootIndexOnlyForFirmware(t *testing.T) {
	for _, arch := range []string{"amd64", "arm64"} {
		c := config()
		c.Arch = arch
		if a := args(&c, launch{accel: "tcg"}); has(a, "-device", "bootindex") {
			t.Errorf("%s kernel boot: a bootindex in %q", arch, a)
		}
		c.Kernel, c.Initrd, c.Cmdline, c.EFIVars = "", "", "", "/i/efi-vars"
		if a := args(&c, launch{accel: "tcg", firmwareCode: "/fw/code.fd"}); !has(a, "-device", "virtio-blk-pci,drive=disk,bootindex=0") {
			t.Errorf("%s EFI boot: the root disk is not bootindex 0 in %q", arch, a)
		}
	}
}

func TestArgsEFIAndKVM(t *testing.T) {
	c := config()
	c.Kernel, c.Initrd, c.Cmdline, c.EFIVars = "", "", "", "/i/efi-vars"
	c.Disk = "/odd,path/disk.raw"
	c.Arch = "amd64"
	a := args(&c, launch{accel: "kvm", firmwareCode: "/fw/OVMF_CODE.fd"})
	for _, want := range [][2]string{
		{"-drive", "if=pflash,format=raw,readonly=on,file=/fw/OVMF_CODE.fd"},
		{"-drive", "if=pflash,format=raw,file=/i/efi-vars"},
		{"-drive", "file=/odd,,path/disk.raw"}, // commas doubled for QEMU
		{"-M", "q35"}, {"-cpu", "host"}, {"-accel", "kvm"},
	} {
		if !has(a, want[0], want[1]) {
			t.Errorf("no %s %s in %q", want[0], want[1], a)
		}
	}
	if slices.Contains(a, "-kernel") {
		t.Error("EFI boot with -kernel")
	}
}

// The share sits behind its own PCIe root port on both machines, the one
// place it can be unplugged from (pcie.0 takes no hotplug), with the ids
// QMP names it by; the guest's RAM is the memfd hostd passes as ramFD.
func TestArgsShareOnItsRootPortAndRAMOnTheMemfd(t *testing.T) {
	for arch, machine := range map[string]string{"arm64": "virt,gic-version=max,memory-backend=mem", "amd64": "q35,memory-backend=mem"} {
		c := config()
		c.Arch = arch
		a := args(&c, launch{accel: "tcg"})
		port, dev := slices.Index(a, "pcie-root-port,id="+sharePortID), slices.Index(a, shareDevice(&c, 0))
		if port < 0 || dev < 0 || port > dev {
			t.Errorf("%s: no root port before the share's device in %q", arch, a)
		}
		if !has(a, "-M", machine) || !has(a, "-object", "memory-backend-file,id=mem,mem-path=/dev/fd/5,share=on") {
			t.Errorf("%s: the RAM is not the memfd in %q", arch, a)
		}
		if slices.Contains(a, "-numa") || has(a, "-object", "memory-backend-memfd") {
			t.Errorf("%s: a RAM QEMU makes itself in %q", arch, a)
		}
		if slices.Contains(a, "-incoming") || slices.Contains(a, "-S") {
			t.Errorf("%s: a boot waits for a saved guest: %q", arch, a)
		}
	}
}

// A saved guest is loaded into a QEMU that waits, paused, for its state,
// with the devices it was saved with: the root port, not the share, which
// was unplugged before the save. Without a share, no root port at all.
func TestArgsIncoming(t *testing.T) {
	c := config()
	a := args(&c, launch{accel: "tcg", incoming: true})
	if !has(a, "-incoming", "defer") || !slices.Contains(a, "-S") {
		t.Errorf("no -S -incoming defer in %q", a)
	}
	if !slices.Contains(a, "pcie-root-port,id="+sharePortID) || has(a, "-device", "vhost-user-fs-pci") || has(a, "-chardev", "id=virtiofs") {
		t.Errorf("want the empty root port, no share, in %q", a)
	}
	// The arm64 kernel is in the loaded memory: not read again. On x86 it
	// brings an option ROM the stream expects.
	if slices.Contains(a, "-kernel") || slices.Contains(a, "-initrd") || slices.Contains(a, "-append") {
		t.Errorf("an arm64 restore loads the kernel again: %q", a)
	}
	x86 := config()
	x86.Arch = "amd64"
	if a := args(&x86, launch{accel: "tcg", incoming: true}); !has(a, "-kernel", "/i/kernel") {
		t.Errorf("an x86 restore without the kernel's option ROM: %q", a)
	}
	c.Shares = nil
	if a := args(&c, launch{accel: "tcg"}); has(a, "-device", "pcie-root-port") {
		t.Errorf("a root port without a share in %q", a)
	}
}

// Every share has its root port, device, chardev and socket, the first
// with the ids it always had (a saved guest's root port keeps its id),
// the others numbered; a restore gets the root ports alone.
func TestArgsSeveralShares(t *testing.T) {
	c := config()
	c.Shares = append(c.Shares, machine.Share{Dir: "/data", Tag: "mount1", ReadOnly: true}, machine.Share{Dir: "/src", Tag: "mount2"})
	a := args(&c, launch{accel: "tcg"})
	for i, want := range []string{
		"vhost-user-fs-pci,id=share,bus=shareport,chardev=virtiofs,tag=workspace",
		"vhost-user-fs-pci,id=share1,bus=shareport1,chardev=virtiofs1,tag=mount1",
		"vhost-user-fs-pci,id=share2,bus=shareport2,chardev=virtiofs2,tag=mount2",
	} {
		port := []string{"pcie-root-port,id=shareport", "pcie-root-port,id=shareport1,chassis=1", "pcie-root-port,id=shareport2,chassis=2"}[i]
		if !has(a, "-device", want) || !slices.Contains(a, port) {
			t.Errorf("share %d: no %q behind %s in %q", i, want, port, a)
		}
		if !has(a, "-chardev", "path=/i/run/"+[]string{"virtiofs", "virtiofs1", "virtiofs2"}[i]+".sock") {
			t.Errorf("share %d: not on its own socket in %q", i, a)
		}
	}
	in := args(&c, launch{accel: "tcg", incoming: true})
	if n := strings.Count(strings.Join(in, " "), "pcie-root-port"); n != 3 || has(in, "-device", "vhost-user-fs-pci") {
		t.Errorf("a restore wants 3 empty root ports, got %d in %q", n, in)
	}
	if shareIndex(&c, "share2") != 2 || shareIndex(&c, "share") != 0 || shareIndex(&c, "share3") != -1 || shareIndex(&c, "shareport1") != -1 {
		t.Error("shareIndex does not find the shares by their devices' ids")
	}
}

func TestNoKVMForAForeignArchitecture(t *testing.T) {
	foreign := "arm64"
	if hostArch() == "arm64" {
		foreign = "amd64"
	}
	if r := newAccelProbe("").probeKVM("/nonexistent/qemu", foreign); r.accel != "tcg" || r.ran || !strings.Contains(r.why, "guest on") {
		t.Fatalf("got %+v", r)
	}
}
