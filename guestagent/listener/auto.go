package listener

import (
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/mdlayher/vsock"

	"github.com/coworkhq/cowork/internal/agentwire"
)

// Where Auto listens is not decided at the first look: the agent starts
// early in the boot, when the driver of the guest's vsock device may not
// have loaded yet. Deciding once then chose the serial port on vz, which
// has none, and the agent failed at every start until systemd gave up.
// The choice is made again every autoEvery for up to autoWithin; a vsock
// device, once seen, is waited for even when a serial port is there too.

// probes are what the choice looks at.
type probes struct {
	vsockReady  func() bool // the guest's vsock transport answers with a context id
	vsockDevice func() bool // a virtio vsock device exists, its driver loaded or not
	serialPort  func() bool // the virtio-serial port agentwire.SerialPort exists
	every       time.Duration
	within      time.Duration
	sleep       func(time.Duration)
}

const (
	autoEvery  = 100 * time.Millisecond
	autoWithin = 60 * time.Second
)

func realProbes() probes {
	return probes{
		vsockReady:  func() bool { return checkContextID(vsock.ContextID()) == nil },
		vsockDevice: func() bool { return hasVirtioDevice("/sys", virtioIDVsock) },
		serialPort:  func() bool { return hasSerialPort("/sys", agentwire.SerialPort) },
		every:       autoEvery, within: autoWithin, sleep: time.Sleep,
	}
}

// chooseAuto is the address Auto stands for on this guest: vsock when its
// device is there (waiting for its driver), else the serial port, looking
// again until one is there or p.within has passed.
func chooseAuto(p probes, log *slog.Logger) (string, error) {
	sawVsock := false
	for waited := time.Duration(0); ; waited += p.every {
		switch {
		case p.vsockReady():
			return autoVsock(), nil
		case p.vsockDevice():
			sawVsock = true // its driver is loading: wait for it
		case p.serialPort():
			return autoSerial, nil
		}
		if waited >= p.within {
			break
		}
		p.sleep(p.every)
	}
	if sawVsock && p.serialPort() {
		log.Warn("the guest's vsock device never answered; listening on the serial port instead", "waited", p.within)
		return autoSerial, nil
	}
	if sawVsock {
		return "", fmt.Errorf("listen auto: the guest has a vsock device, but its transport gave no context id within %s: is the vmw_vsock_virtio_transport module in the guest's kernel? (or pass --listen %s)", p.within, autoVsock())
	}
	return "", fmt.Errorf("listen auto: the guest has neither a vsock device nor the virtio-serial port %s after %s: start the VM with one of them (cowork does), or pass --listen", agentwire.SerialPort, p.within)
}

// virtioIDVsock is the virtio device id of a socket device (virtio spec
// 5.10), as sysfs shows it in the device's "device" file.
const virtioIDVsock = "0x0013"

// maxSysfsEntries bounds the entries looked at in a sysfs folder.
const maxSysfsEntries = 1024

// hasVirtioDevice reports whether sysRoot/bus/virtio/devices holds a
// device of the given id.
func hasVirtioDevice(sysRoot, id string) bool {
	return anyEntryHas(filepath.Join(sysRoot, "bus/virtio/devices"), "device", id)
}

// hasSerialPort reports whether sysRoot/class/virtio-ports has a port
// named name, without making its device node (SysfsPort does).
func hasSerialPort(sysRoot, name string) bool {
	return anyEntryHas(filepath.Join(sysRoot, "class/virtio-ports"), "name", name)
}

// anyEntryHas reports whether one of the first maxSysfsEntries entries
// of the sysfs folder dir has an attribute attr that reads want.
func anyEntryHas(dir, attr, want string) bool {
	d, err := os.Open(dir)
	if err != nil {
		return false
	}
	names, _ := d.Readdirnames(maxSysfsEntries)
	d.Close()
	for _, n := range names {
		if strings.TrimSpace(readSmall(filepath.Join(dir, n, attr))) == want {
			return true
		}
	}
	return false
}

// readSmall reads the first bytes of a sysfs attribute; "" when it cannot.
func readSmall(path string) string {
	f, err := os.Open(path)
	if err != nil {
		return ""
	}
	defer f.Close()
	b, _ := io.ReadAll(io.LimitReader(f, 256))
	return string(b)
}
