package qemu

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/coworkhq/cowork/hostd/machine"
)

// qmpAnswers answers commands by name; the rest get the empty return.
func qmpAnswers(m map[string]string) func(string) string {
	return func(cmd string) string {
		for name, reply := range m {
			if strings.Contains(cmd, `"`+name+`"`) {
				return reply
			}
		}
		return ""
	}
}

const withIgnoreShared = `{"return": [{"capability": "xbzrle", "state": false}, {"capability": "x-ignore-shared", "state": false}]}`

// A save that QEMU fails (a full disk, as measured on a 20 MiB tmpfs)
// leaves the guest running, as it was, and nothing in the directory: the
// error is QEMU's.
func TestSaveFailedMigrationRunsTheGuestOn(t *testing.T) {
	f := newFakeVM(t, nil)
	f.answer = qmpAnswers(map[string]string{
		"query-migrate-capabilities": withIgnoreShared,
		"query-migrate":              `{"return": {"status": "failed", "error-desc": "Unable to write to file: No space left on device"}}`,
	})
	dir := filepath.Join(t.TempDir(), "saved")
	_, err := f.vm.Save(context.Background(), dir)
	if err == nil || !strings.Contains(err.Error(), "No space left on device") {
		t.Fatalf("got %v, want QEMU's reason", err)
	}
	sent := f.sent()
	stop, migrate, cont := slices.Index(sent, "stop"), slices.Index(sent, "migrate"), slices.Index(sent, "cont")
	if stop < 0 || migrate < stop || cont < migrate || !slices.Contains(sent, "getfd") {
		t.Errorf("commands %q: want stop, getfd, migrate, then cont", sent)
	}
	if s := f.vm.State(); s != machine.Running {
		t.Errorf("state %s after a failed save", s)
	}
	if left, _ := os.ReadDir(dir); len(left) != 0 {
		t.Errorf("a failed save left %v", left)
	}
}

// A QEMU without x-ignore-shared would put the whole RAM in the stream:
// Save refuses before it pauses anything, and says what is missing.
func TestSaveNeedsIgnoreShared(t *testing.T) {
	f := newFakeVM(t, nil)
	f.answer = qmpAnswers(map[string]string{
		"query-migrate-capabilities": `{"return": [{"capability": "xbzrle", "state": false}]}`,
		"query-migrate":              `{"return": {"status": "completed"}}`,
	})
	_, err := f.vm.Save(context.Background(), filepath.Join(t.TempDir(), "saved"))
	if err == nil || !strings.Contains(err.Error(), "x-ignore-shared") || !strings.Contains(err.Error(), "7.2.0") {
		t.Fatalf("got %v", err)
	}
	if slices.Contains(f.sent(), "stop") {
		t.Errorf("paused the guest anyway: %q", f.sent())
	}
}

// With the share attached QEMU cannot save; Save says so without pausing.
func TestSaveRefusesWhileTheShareIsAttached(t *testing.T) {
	f := newFakeVM(t, nil)
	f.vm.plugged = []bool{true}
	defer func() { f.vm.plugged = nil }()
	if _, err := f.vm.Save(context.Background(), t.TempDir()); err == nil || !strings.Contains(err.Error(), "detach them first") {
		t.Fatalf("got %v", err)
	}
	if len(f.sent()) != 0 {
		t.Errorf("commands %q", f.sent())
	}
}

// A save does not write over a saved guest, nor through a symlink.
func TestSaveMakesNewFilesOnly(t *testing.T) {
	f := newFakeVM(t, nil)
	f.answer = qmpAnswers(map[string]string{
		"query-migrate-capabilities": withIgnoreShared,
		"query-migrate":              `{"return": {"status": "completed"}}`,
	})
	dir, elsewhere := t.TempDir(), filepath.Join(t.TempDir(), "elsewhere")
	if err := os.Symlink(elsewhere, filepath.Join(dir, machine.DeviceStateFile)); err != nil {
		t.Fatal(err)
	}
	if _, err := f.vm.Save(context.Background(), dir); err == nil {
		t.Fatal("saved through a symlink")
	}
	if _, err := os.Lstat(elsewhere); err == nil {
		t.Error("made the file a symlink points to")
	}
	if slices.Contains(f.sent(), "stop") {
		t.Errorf("paused the guest anyway: %q", f.sent())
	}
}

// DetachShare returns once QEMU says the guest let the device go, then
// drops its socket; a guest that keeps it (its share still mounted) is
// an error once the wait is over, with the device left attached.
func TestDetachShareWaitsForTheGuest(t *testing.T) {
	defer func(d time.Duration) { shareDetachWait = d }(shareDetachWait)
	shareDetachWait = 200 * time.Millisecond

	f := newFakeVM(t, nil)
	f.vm.cfg.Shares, f.vm.plugged = []machine.Share{{Dir: "/ws", Tag: "workspace"}}, []bool{true}
	err := f.vm.DetachShare(context.Background(), nil)
	if err == nil || !strings.Contains(err.Error(), "did not release") {
		t.Fatalf("a guest that keeps the device: %v", err)
	}
	if sent := f.sent(); !slices.Equal(sent, []string{"device_del"}) {
		t.Errorf("commands %q, want device_del alone", sent)
	}

	// Only the device itself counts, not its parts.
	f = newFakeVM(t, nil)
	f.vm.cfg.Shares, f.vm.plugged = []machine.Share{{Dir: "/ws", Tag: "workspace"}}, []bool{true}
	f.answer = func(cmd string) string {
		if strings.Contains(cmd, "device_del") {
			go f.send(`{"event": "DEVICE_DELETED", "data": {"path": "/machine/peripheral/share/virtio-backend"}, "timestamp": {"seconds": 1, "microseconds": 2}}`)
		}
		return ""
	}
	if err := f.vm.DetachShare(context.Background(), nil); err == nil {
		t.Error("a part of the device taken for the device")
	}

	shareDetachWait = time.Minute
	f = newFakeVM(t, nil)
	f.vm.cfg.Shares, f.vm.plugged = []machine.Share{{Dir: "/ws", Tag: "workspace"}}, []bool{true}
	f.answer = func(cmd string) string {
		if strings.Contains(cmd, "device_del") {
			go func() {
				time.Sleep(50 * time.Millisecond)
				// QEMU names the device's parts too; only "share" counts.
				f.send(`{"event": "DEVICE_DELETED", "data": {"path": "/machine/peripheral/share/virtio-backend"}, "timestamp": {"seconds": 1, "microseconds": 2}}`)
				f.send(`{"event": "DEVICE_DELETED", "data": {"device": "share", "path": "/machine/peripheral/share"}, "timestamp": {"seconds": 1, "microseconds": 3}}`)
			}()
		}
		return ""
	}
	if err := f.vm.DetachShare(context.Background(), nil); err != nil {
		t.Fatal(err)
	}
	if sent := f.sent(); !slices.Equal(sent, []string{"device_del", "chardev-remove"}) {
		t.Errorf("commands %q", sent)
	}

	// With two shares, the wait is over once the guest let both go.
	shareDetachWait = 300 * time.Millisecond
	for _, events := range [][]string{{"share1"}, {"share1", "share"}} {
		f = newFakeVM(t, nil)
		f.vm.cfg.Shares, f.vm.plugged = []machine.Share{{Dir: "/ws", Tag: "workspace"}, {Dir: "/data", Tag: "mount1"}}, []bool{true, true}
		dels := 0
		f.answer = func(cmd string) string {
			if strings.Contains(cmd, "device_del") {
				if dels++; dels == 2 {
					go func() {
						for i, dev := range events {
							f.send(fmt.Sprintf(`{"event": "DEVICE_DELETED", "data": {"device": %q}, "timestamp": {"seconds": 1, "microseconds": %d}}`, dev, i))
						}
					}()
				}
			}
			return ""
		}
		err := f.vm.DetachShare(context.Background(), nil)
		switch {
		case len(events) == 1 && (err == nil || !strings.Contains(err.Error(), "share /ws")):
			t.Errorf("one of two shares released: %v, want the other (/ws) named", err)
		case len(events) == 2 && err != nil:
			t.Errorf("both shares released: %v", err)
		case len(events) == 2 && !slices.Equal(f.sent(), []string{"device_del", "device_del", "chardev-remove", "chardev-remove"}):
			t.Errorf("both shares released: commands %q", f.sent())
		}
		if len(events) == 2 {
			continue
		}
		// The share the guest let go of is out, the other still in and
		// served: AttachShare puts back that one alone.
		if _, plugged := f.vm.shareState(); !slices.Equal(plugged, []bool{true, false}) {
			t.Fatalf("after a detach cut short: plugged %v, want the workspace alone", plugged)
		}
		var served []int
		f.vm.serveShare = func(_ context.Context, i int) (*process, error) {
			served = append(served, i)
			return start(exec.Command("sleep", "60"), io.NopCloser(nil))
		}
		before := len(f.sent())
		if err := f.vm.AttachShare(context.Background()); err != nil {
			t.Fatal(err)
		}
		if cmds := f.sent()[before:]; !slices.Equal(cmds, []string{"chardev-add", "device_add"}) || !slices.Equal(served, []int{1}) {
			t.Errorf("AttachShare after a detach cut short: commands %q, served %v; want share 1 alone", cmds, served)
		}
		if _, plugged := f.vm.shareState(); !slices.Equal(plugged, []bool{true, true}) {
			t.Errorf("after AttachShare: plugged %v", plugged)
		}
		f.vm.stopShareServers()
	}
}

// A share the guest ejected (its agent powered the slot off) is one QEMU
// no longer has: device_del is refused, QEMU's list of devices is asked,
// and its socket goes once DEVICE_DELETED says QEMU let go of it, without
// the kernel's 5 s. The guest's word alone counts for nothing: a device
// QEMU still has, or one whose release QEMU never reports, stays.
func TestDetachShareTakesWhatTheGuestEjected(t *testing.T) {
	defer func(d time.Duration) { shareDetachWait = d }(shareDetachWait)
	deleted := `{"event": "DEVICE_DELETED", "data": {"device": "share", "path": "/machine/peripheral/share"}, "timestamp": {"seconds": 1, "microseconds": 3}}`
	notFound := `{"error": {"class": "DeviceNotFound", "desc": "Device 'share' not found"}}`
	for _, c := range []struct {
		name      string
		ejectErr  error
		qomList   string // QEMU's devices after the eject
		event     bool   // QEMU reports the device deleted
		wantErr   string
		wantCmds  []string
		unplugged bool
	}{
		{"ejected", nil, `{"return": [{"name": "net", "type": "child<virtio-net-pci>"}]}`, true, "",
			[]string{"device_del", "qom-list", "chardev-remove"}, true},
		{"the guest lies", nil, `{"return": [{"name": "share", "type": "child<vhost-user-fs-pci>"}]}`, true, "unplug the share of /ws",
			[]string{"device_del", "qom-list"}, false},
		{"no word from QEMU", nil, `{"return": []}`, false, "did not release",
			[]string{"device_del", "qom-list"}, false},
	} {
		t.Run(c.name, func(t *testing.T) {
			shareDetachWait = 300 * time.Millisecond
			if c.event {
				shareDetachWait = time.Minute // the event ends the wait
			}
			f := newFakeVM(t, nil)
			f.vm.cfg.Shares, f.vm.plugged = []machine.Share{{Dir: "/ws", Tag: "workspace"}}, []bool{true}
			f.answer = func(cmd string) string {
				switch {
				case strings.Contains(cmd, "device_del"):
					return notFound
				case strings.Contains(cmd, "qom-list"):
					return c.qomList
				}
				return ""
			}
			ejects := 0
			eject := func(context.Context) error {
				ejects++
				if c.event {
					go func() { time.Sleep(20 * time.Millisecond); f.send(deleted) }()
				}
				return nil
			}
			began := time.Now()
			err := f.vm.DetachShare(context.Background(), eject)
			switch {
			case c.wantErr == "" && err != nil:
				t.Fatal(err)
			case c.wantErr != "" && (err == nil || !strings.Contains(err.Error(), c.wantErr)):
				t.Fatalf("DetachShare: %v, want %q", err, c.wantErr)
			case ejects != 1:
				t.Errorf("%d ejects, want 1", ejects)
			case time.Since(began) > 10*time.Second:
				t.Errorf("took %s", time.Since(began))
			}
			if sent := f.sent(); !slices.Equal(sent, c.wantCmds) {
				t.Errorf("commands %q, want %q", sent, c.wantCmds)
			}
			if _, plugged := f.vm.shareState(); plugged[0] == c.unplugged {
				t.Errorf("plugged %v after the detach", plugged)
			}
		})
	}

	// A guest that ejected its share on its own, before this detach: its
	// DEVICE_DELETED came then, and is not waited for again.
	shareDetachWait = 2 * time.Second
	f0 := newFakeVM(t, nil)
	f0.vm.cfg.Shares, f0.vm.plugged = []machine.Share{{Dir: "/ws", Tag: "workspace"}}, []bool{true}
	f0.answer = func(cmd string) string {
		switch {
		case strings.Contains(cmd, "device_del"):
			return notFound
		case strings.Contains(cmd, "qom-list"):
			return `{"return": []}`
		}
		return ""
	}
	f0.send(deleted)
	for deadline := time.Now().Add(10 * time.Second); !f0.vm.wasDeleted(0); time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("QEMU's DEVICE_DELETED was not kept")
		}
	}
	began := time.Now()
	if err := f0.vm.DetachShare(context.Background(), nil); err != nil || time.Since(began) > 10*time.Second {
		t.Fatalf("a share ejected before the detach: %v after %s", err, time.Since(began))
	}
	if sent := f0.sent(); !slices.Equal(sent, []string{"device_del", "qom-list", "chardev-remove"}) {
		t.Errorf("commands %q", sent)
	}
	// Plugged in again, it waits for its own event at its next detach.
	f0.vm.serveShare = func(context.Context, int) (*process, error) {
		return start(exec.Command("sleep", "60"), io.NopCloser(nil))
	}
	if err := f0.vm.AttachShare(context.Background()); err != nil {
		t.Fatal(err)
	}
	if f0.vm.wasDeleted(0) {
		t.Error("a share plugged in again still counts as deleted")
	}
	f0.vm.stopShareServers()

	// An eject that fails (an agent of an older build) leaves it to the
	// guest's kernel, as before.
	shareDetachWait = time.Minute
	f := newFakeVM(t, nil)
	f.vm.cfg.Shares, f.vm.plugged = []machine.Share{{Dir: "/ws", Tag: "workspace"}}, []bool{true}
	f.answer = func(cmd string) string {
		if strings.Contains(cmd, "device_del") {
			go f.send(deleted)
		}
		return ""
	}
	if err := f.vm.DetachShare(context.Background(), func(context.Context) error { return errors.New("unknown method") }); err != nil {
		t.Fatal(err)
	}
	if sent := f.sent(); !slices.Equal(sent, []string{"device_del", "chardev-remove"}) {
		t.Errorf("commands %q", sent)
	}
}

// Restore hands QEMU only files of the sizes a save writes, never through
// a symlink: QEMU's loader trusts its input.
func TestRestoreChecksTheFiles(t *testing.T) {
	cfg := fakeQEMUConfig(t)
	dir := t.TempDir()
	saved := &machine.Saved{Dir: dir, Memory: cfg.Memory}
	write := func(name string, size int64) {
		t.Helper()
		os.Remove(filepath.Join(dir, name))
		fh, err := os.Create(filepath.Join(dir, name))
		if err != nil {
			t.Fatal(err)
		}
		fh.Truncate(size)
		fh.Close()
	}
	for _, c := range []struct {
		name      string
		ram, dev  int64
		link      bool
		wantInErr string
	}{
		{"a RAM file of another size", cfg.Memory / 2, 1000, false, "not a guest this VM saved"},
		{"an empty device state", cfg.Memory, 0, false, "not a guest this VM saved"},
		{"a huge device state", cfg.Memory, maxDeviceState + 1, false, "not a guest this VM saved"},
		{"a symlinked RAM file", cfg.Memory, 1000, true, "too many levels of symbolic links"},
	} {
		write(machine.DeviceStateFile, c.dev)
		write(machine.RAMFile, c.ram)
		if c.link {
			os.Rename(filepath.Join(dir, machine.RAMFile), filepath.Join(dir, "elsewhere"))
			os.Symlink(filepath.Join(dir, "elsewhere"), filepath.Join(dir, machine.RAMFile))
		}
		vm, err := New(cfg, slog.New(slog.DiscardHandler))
		if err != nil {
			t.Fatal(err)
		}
		if err := vm.Restore(context.Background(), saved); err == nil || !strings.Contains(err.Error(), c.wantInErr) {
			t.Errorf("%s: %v", c.name, err)
		}
		if vm.qemu != nil {
			t.Errorf("%s: QEMU was started", c.name)
		}
	}
	other := *saved
	other.Memory *= 2
	vm, _ := New(cfg, slog.New(slog.DiscardHandler))
	if err := vm.Restore(context.Background(), &other); err == nil || !strings.Contains(err.Error(), "memory") {
		t.Errorf("a guest saved with other memory: %v", err)
	}
}

// A restore plugs in the shares whose servers started beside QEMU, before
// the guest runs on; one that fails is left out whole, and AttachShare
// after the resume plugs in what is missing, and only that.
func TestRestorePlugsTheServedShares(t *testing.T) {
	f := newFakeVM(t, nil)
	f.vm.cfg.Shares = []machine.Share{{Dir: "/ws", Tag: "workspace"}, {Dir: "/data", Tag: "mount1"}, {Dir: "/srv", Tag: "mount2"}}
	f.answer = func(cmd string) string {
		if strings.Contains(cmd, `"device_add"`) && strings.Contains(cmd, `"mount2"`) {
			return `{"error": {"class": "GenericError", "desc": "no slot"}}`
		}
		return ""
	}
	sleeper := func() *process {
		p, err := start(exec.Command("sleep", "60"), io.NopCloser(nil))
		if err != nil {
			t.Fatal(err)
		}
		return p
	}
	// Share 1's server did not start; share 2's device is refused.
	srv0, srv2 := sleeper(), sleeper()
	f.vm.plugServed([]*process{srv0, nil, srv2})
	if sent := f.sent(); !slices.Equal(sent, []string{"chardev-add", "device_add", "chardev-add", "device_add", "chardev-remove"}) {
		t.Errorf("commands %q: want share 0 plugged in, share 2 tried and its socket taken back", sent)
	}
	served, plugged := f.vm.shareState()
	if !slices.Equal(plugged, []bool{true, false, false}) || !slices.Equal(served, []bool{true, false, false}) {
		t.Errorf("served %v, plugged %v; want share 0 alone", served, plugged)
	}
	select {
	case <-srv2.exited:
	case <-time.After(10 * time.Second):
		t.Error("the server of the share QEMU refused still runs")
	}

	f.answer = nil
	var again []int
	f.vm.serveShare = func(_ context.Context, i int) (*process, error) {
		again = append(again, i)
		return sleeper(), nil
	}
	before := len(f.sent())
	if err := f.vm.AttachShare(context.Background()); err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(again, []int{1, 2}) || len(f.sent()[before:]) != 4 {
		t.Errorf("AttachShare served %v with commands %q; want shares 1 and 2", again, f.sent()[before:])
	}
	f.vm.stopShareServers()
}

// Servers a restore started that were not up when it loaded the guest
// are plugged in by AttachShare once they are, not started again; a VM
// stopped before that ends them.
func TestAttachSharePlugsTheRestoresLateServers(t *testing.T) {
	sleeper := func() *process {
		p, err := start(exec.Command("sleep", "60"), io.NopCloser(nil))
		if err != nil {
			t.Fatal(err)
		}
		return p
	}
	f := newFakeVM(t, nil)
	f.vm.cfg.Shares = []machine.Share{{Dir: "/ws", Tag: "workspace"}}
	late := make(chan []*process, 1)
	f.vm.pending = late
	f.vm.serveShare = func(context.Context, int) (*process, error) {
		t.Error("a second server started for a share whose server was on its way")
		return sleeper(), nil
	}
	go func() {
		time.Sleep(100 * time.Millisecond)
		late <- []*process{sleeper()}
	}()
	if err := f.vm.AttachShare(context.Background()); err != nil {
		t.Fatal(err)
	}
	if sent := f.sent(); !slices.Equal(sent, []string{"chardev-add", "device_add"}) {
		t.Errorf("commands %q", sent)
	}
	if _, plugged := f.vm.shareState(); !slices.Equal(plugged, []bool{true}) {
		t.Errorf("plugged %v", plugged)
	}
	f.vm.stopShareServers()

	// Stopped before they came up: they are ended when they do.
	late = make(chan []*process, 1)
	f.vm.pending = late
	f.vm.stopShareServers()
	p := sleeper()
	late <- []*process{p}
	select {
	case <-p.exited:
	case <-time.After(10 * time.Second):
		t.Error("a late server outlived its stopped VM")
	}
}
