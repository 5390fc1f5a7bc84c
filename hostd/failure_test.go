package hostd

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/coworkhq/cowork/hostd/controlwire"
	"github.com/coworkhq/cowork/hostd/instance"
	"github.com/coworkhq/cowork/hostd/instance/instancetest"
	"github.com/coworkhq/cowork/hostd/machine/machinetest"
	"github.com/coworkhq/cowork/units"
)

func (e *events) subscribers() int {
	e.mu.Lock()
	defer e.mu.Unlock()
	return len(e.subs)
}

// A boot that fails reaches the client following it as the failure, with
// its cause, however soon hostd exits after it: a client that saw only the
// connection break ("rpc error: code = Unavailable desc = error reading
// from server: EOF") could tell the user nothing. The cause is also kept
// for `cowork status` and for a client whose stream broke anyway. Run many
// times, as the loss was a race between the last send and the exit.
func TestBootFailureReachesTheClientFollowingIt(t *testing.T) {
	const why = `qemu-system-aarch64: -device virtio-net-pci: failed to find romfile "efi-virtio.rom"; install it (Debian: apt install ipxe-qemu)`
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	for i := range 20 {
		p, cfg := instancetest.New(t, instance.Config{Arch: "arm64", CPUs: 1, Memory: 256 * units.MiB, Disk: units.GiB, Boot: instance.BootKernel})
		release := make(chan struct{})
		host := machinetest.NewHost(t, machinetest.Guest{StartGate: release, StartErr: errors.New(why)})
		d := newDaemon(p, cfg, Options{Name: cfg.Name, Log: log, NewMachine: host.NewMachine})
		served := make(chan error, 1)
		go func() {
			err := d.serve(context.Background())
			d.cleanup()
			served <- err
		}()

		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		stream := followWhenServed(t, ctx, dialControl(t, p.HostdSock()))
		for d.events.subscribers() == 0 {
			if ctx.Err() != nil {
				t.Fatal("the client never subscribed")
			}
			time.Sleep(time.Millisecond)
		}
		close(release)

		var last *controlwire.Event
		for {
			ev, err := stream.Recv()
			if errors.Is(err, io.EOF) {
				break
			}
			if err != nil {
				t.Fatalf("run %d: the stream broke (%v) after %v; the failure never reached the client", i, err, last)
			}
			last = ev
		}
		if last == nil || last.Phase != controlwire.PhaseFailed || last.Error != why {
			t.Errorf("run %d: the last event is %v, want FAILED with the cause", i, last)
		}
		if b, err := os.ReadFile(p.LastStop()); err != nil || strings.TrimSpace(string(b)) != why {
			t.Errorf("run %d: %s holds %q, %v; want the cause", i, p.LastStop(), b, err)
		}
		if err := <-served; err == nil || err.Error() != why {
			t.Errorf("run %d: serve: %v", i, err)
		}
		cancel()
	}
}
