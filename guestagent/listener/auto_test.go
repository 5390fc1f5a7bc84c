package listener

import (
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// guestAt is a guest whose vsock driver answers from look vsockFrom on
// (never when < 0), with a vsock device from look deviceFrom and a serial
// port from look serialFrom (never when < 0).
func guestAt(vsockFrom, deviceFrom, serialFrom int) (probes, *int) {
	looks := 0
	at := func(from int) func() bool { return func() bool { return from >= 0 && looks >= from } }
	return probes{
		vsockReady:  at(vsockFrom),
		vsockDevice: at(deviceFrom),
		serialPort:  at(serialFrom),
		every:       time.Millisecond, within: 50 * time.Millisecond,
		sleep: func(time.Duration) { looks++ },
	}, &looks
}

func TestAutoChoice(t *testing.T) {
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	for _, c := range []struct {
		name                  string
		vsock, device, serial int
		want, wantErr         string
	}{
		// vz: the device is there at once, its driver a few looks later.
		// Deciding at the first look chose the serial port.
		{"vz, the vsock driver loads late", 5, 0, -1, "vsock://", ""},
		{"vz with a serial port too: vsock is preferred", 5, 0, 0, "vsock://", ""},
		{"vz, all there at once", 0, 0, -1, "vsock://", ""},
		// QEMU: no vsock device; its serial port appears once udev has run.
		{"QEMU, the port appears late", -1, -1, 3, "serial://", ""},
		{"a vsock device that never answers, and a serial port", -1, 0, 0, "serial://", ""},
		{"a vsock device that never answers", -1, 0, -1, "", "vmw_vsock_virtio_transport"},
		{"nothing", -1, -1, -1, "", "neither a vsock device nor"},
	} {
		p, _ := guestAt(c.vsock, c.device, c.serial)
		got, err := chooseAuto(p, log)
		if !strings.HasPrefix(got, c.want) || (c.want == "") != (got == "") {
			t.Errorf("%s: chose %q, want %s...", c.name, got, c.want)
		}
		if (err != nil) != (c.wantErr != "") || (err != nil && !strings.Contains(err.Error(), c.wantErr)) {
			t.Errorf("%s: error %v, want one saying %q", c.name, err, c.wantErr)
		}
	}
}

func TestSysfsProbes(t *testing.T) {
	sys := t.TempDir()
	mk := func(p, body string) {
		os.MkdirAll(filepath.Dir(filepath.Join(sys, p)), 0o755)
		os.WriteFile(filepath.Join(sys, p), []byte(body), 0o644)
	}
	if hasVirtioDevice(sys, virtioIDVsock) || hasSerialPort(sys, "org.cowork.agent") {
		t.Fatal("an empty /sys has devices")
	}
	mk("bus/virtio/devices/virtio0/device", "0x0001\n") // a NIC
	mk("bus/virtio/devices/virtio1/device", "0x0003\n") // a console
	mk("class/virtio-ports/vport1p1/name", "org.other\n")
	if hasVirtioDevice(sys, virtioIDVsock) || hasSerialPort(sys, "org.cowork.agent") {
		t.Fatal("other devices taken for ours")
	}
	mk("bus/virtio/devices/virtio2/device", "0x0013\n")
	mk("class/virtio-ports/vport1p2/name", "org.cowork.agent\n")
	if !hasVirtioDevice(sys, virtioIDVsock) || !hasSerialPort(sys, "org.cowork.agent") {
		t.Fatal("the vsock device or the port not found")
	}
}
