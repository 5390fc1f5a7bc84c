package cowork

import (
	"context"
	"errors"
	"net"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/coworkhq/cowork/hostd/controlwire"
	"github.com/coworkhq/cowork/hostd/instance"
)

// eventsHostd is a hostd whose event stream sends events, then breaks
// the connection when cut is set (as a hostd that exits at once does),
// or ends the stream.
type eventsHostd struct {
	controlwire.Unimplemented
	events []*Event
	cut    bool
	stop   func()
	sent   chan struct{} // closed once the events are sent, when not nil
}

func (f *eventsHostd) Events(ctx context.Context, send func(*Event) error) error {
	for _, ev := range f.events {
		if err := send(ev); err != nil {
			return err
		}
	}
	if f.sent != nil {
		close(f.sent)
	}
	if f.cut {
		go f.stop()
		<-ctx.Done()
	}
	return nil
}

// followFake runs Client.follow against f, serving instance p.
func followFake(t *testing.T, p instance.Paths, f *eventsHostd) (*Client, error) {
	t.Helper()
	ln, err := net.Listen("unix", p.HostdSock())
	if err != nil {
		t.Fatal(err)
	}
	g := controlwire.NewServer(f)
	f.stop = g.Close
	go g.Serve(ln)
	t.Cleanup(g.Close)
	c := newClient("sandbox", p)
	t.Cleanup(func() { c.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	err = c.follow(ctx, nil)
	return c, err
}

func ev(phase Phase, msg, err string) *Event {
	return &Event{At: time.Now(), Phase: phase, Message: msg, Error: err}
}

const romCause = `qemu-system-aarch64: -device virtio-net-pci: failed to find romfile "efi-virtio.rom"; install it (Debian: apt install ipxe-qemu)`

// A boot that failed before the guest ran ends in hostd's cause and where
// its log is: two lines, not the logs' tails.
func TestFollowGivesTheCauseInTwoLines(t *testing.T) {
	c, err := followFake(t, newInstance(t), &eventsHostd{events: []*Event{ev(PhaseFailed, "boot failed", romCause)}})
	var be *BootError
	if !errors.As(err, &be) {
		t.Fatalf("follow: %v", err)
	}
	want := "instance sandbox did not start: boot failed: " + romCause + "\nmore in hostd's log, " + c.Paths.HostdLog()
	if err.Error() != want {
		t.Errorf("follow:\n%s\nwant:\n%s", err, want)
	}
}

// When the guest ran, its console's last lines may be the cause: they
// come with the error.
func TestFollowShowsTheConsoleWhenTheGuestRan(t *testing.T) {
	p := newInstance(t)
	os.WriteFile(p.SerialLog(), []byte("[    1.0] VFS: Unable to mount root fs on unknown-block(0,0)\n"), 0o600)
	_, err := followFake(t, p, &eventsHostd{events: []*Event{
		ev(PhaseVMStarted, "VM started", ""),
		ev(PhaseStopped, "the VM stopped unexpectedly", "QEMU exited on its own (qemu exited)"),
	}})
	if err == nil || !strings.Contains(err.Error(), "Unable to mount root fs") {
		t.Errorf("follow: %v", err)
	}
}

// A hostd that exited before its last event reached the client (or died)
// leaves the cause in last-stop.txt: the client says that, never the
// broken connection's error.
func TestFollowReadsTheCauseAHostdLeftBehind(t *testing.T) {
	p := newInstance(t)
	os.WriteFile(p.LastStop(), []byte(romCause+"\n"), 0o600)
	_, err := followFake(t, p, &eventsHostd{cut: true, events: []*Event{ev(PhaseVMStarted, "VM started", "")}})
	if err == nil || !strings.HasPrefix(err.Error(), "instance sandbox did not start: "+romCause+"\n") || strings.Contains(err.Error(), "closed the connection") {
		t.Errorf("follow: %v", err)
	}
}

// A hostd that failed its boot and exited before the client asked for
// the events (its socket gone) is reported by the cause it left, not as
// a hostd that does not answer.
func TestFollowOfAHostdGoneBeforeItAskedGivesTheCause(t *testing.T) {
	p := newInstance(t)
	const why = "workspace /tmp/ws does not exist: create it, or init again with another --workspace"
	os.WriteFile(p.LastStop(), []byte(why+"\n"), 0o600)
	c := newClient("sandbox", p)
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	err := c.follow(ctx, nil)
	if err == nil || !strings.HasPrefix(err.Error(), "instance sandbox did not start: "+why+"\n") || strings.Contains(err.Error(), "does not answer") {
		t.Errorf("follow: %v", err)
	}
}

func TestFollowWithoutACauseSaysHostdExited(t *testing.T) {
	_, err := followFake(t, newInstance(t), &eventsHostd{cut: true})
	if err == nil || !strings.Contains(err.Error(), "its hostd exited without saying why") || strings.Contains(err.Error(), "closed the connection") {
		t.Errorf("follow: %v", err)
	}
}

// After a failed boot hostd exits: the start returns once it has, so that
// the next command (a status, another start) does not find a hostd that
// holds the instance but no longer answers.
func TestFollowWaitsForTheFailedHostdToExit(t *testing.T) {
	p := newInstance(t)
	lock, err := instance.TryLock(p)
	if err != nil {
		t.Fatal(err)
	}
	f := &eventsHostd{events: []*Event{ev(PhaseFailed, "boot failed", romCause)}, sent: make(chan struct{})}
	go func() {
		<-f.sent
		time.Sleep(200 * time.Millisecond) // hostd still on its way out
		lock.Release()
	}()
	_, err = followFake(t, p, f)
	if !errors.As(err, new(*BootError)) {
		t.Fatalf("follow: %v", err)
	}
	if instance.Held(p) {
		t.Error("follow returned while the failed hostd still held the instance")
	}
}
