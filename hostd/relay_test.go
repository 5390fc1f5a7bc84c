package hostd

import (
	"bufio"
	"context"
	"io"
	"log/slog"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/coworkhq/cowork/hostd/controlwire"
	"github.com/coworkhq/cowork/hostd/instance"
	"github.com/coworkhq/cowork/hostd/machine"
	"github.com/coworkhq/cowork/hostd/netstack"
	"github.com/coworkhq/cowork/hostd/netstack/audit"
	"github.com/coworkhq/cowork/internal/unixsock"
)

// echoMachine is a VM whose agent channels echo a line back.
type echoMachine struct{ machine.Machine }

func (echoMachine) DialAgent(context.Context) (net.Conn, error) {
	a, b := net.Pipe()
	go func() {
		defer b.Close()
		line, _ := bufio.NewReader(b).ReadString('\n')
		io.WriteString(b, "agent: "+line)
	}()
	return a, nil
}

// emfileListener fails its first Accepts as a process out of descriptors
// does, then accepts for real.
type emfileListener struct {
	net.Listener
	fail atomic.Int32
}

func (l *emfileListener) Accept() (net.Conn, error) {
	if l.fail.Add(-1) >= 0 {
		return nil, &net.OpError{Op: "accept", Net: "unix", Err: os.NewSyscallError("accept4", syscall.EMFILE)}
	}
	return l.Listener.Accept()
}

// TestAgentSocketServesAfterRunningOutOfDescriptors: agent.sock's loop
// used to return on the first failed Accept and never accept again.
func TestAgentSocketServesAfterRunningOutOfDescriptors(t *testing.T) {
	sock := t.TempDir() + "/agent.sock"
	inner, err := unixsock.Listen(sock)
	if err != nil {
		t.Fatal(err)
	}
	l := &emfileListener{Listener: inner}
	l.fail.Store(5)
	d := &Daemon{vm: echoMachine{}, log: slog.New(slog.NewTextHandler(io.Discard, nil))}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { d.relay(ctx, l); close(done) }()
	defer func() {
		cancel()
		<-done
	}()

	c, err := net.Dial("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(30 * time.Second))
	io.WriteString(c, "hello\n")
	got, err := bufio.NewReader(c).ReadString('\n')
	if err != nil || got != "agent: hello\n" {
		t.Fatalf("after 5 failed accepts: %q %v; agent.sock stopped serving", got, err)
	}
	if l.fail.Load() >= 0 {
		t.Fatal("the failures were not all seen")
	}
}

// silentGuest is a VM whose agent channels are TCP connections the guest
// holds open without a word; closed reports the host's end closing.
type silentGuest struct {
	machine.Machine
	t      *testing.T
	closed chan struct{}
}

// hostEnd is the host's end of an agent channel; it can half-close.
type hostEnd struct {
	*net.TCPConn
	closed chan struct{}
	once   sync.Once
}

func (c *hostEnd) Close() error {
	c.once.Do(func() { close(c.closed) })
	return c.TCPConn.Close()
}

func (m silentGuest) DialAgent(context.Context) (net.Conn, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	defer l.Close()
	host, err := net.Dial("tcp", l.Addr().String())
	if err != nil {
		return nil, err
	}
	guest, err := l.Accept()
	if err != nil {
		return nil, err
	}
	m.t.Cleanup(func() { guest.Close() }) // held open, and silent, until the test ends
	return &hostEnd{TCPConn: host.(*net.TCPConn), closed: m.closed}, nil
}

// TestAgentSocketLetsGoOfAGuestThatHoldsOn: when the host's client leaves
// agent.sock, hostd closes its end of the agent channel at once, even if
// the guest neither answers nor closes: a guest must not pin host sockets.
func TestAgentSocketLetsGoOfAGuestThatHoldsOn(t *testing.T) {
	sock := t.TempDir() + "/agent.sock"
	l, err := unixsock.Listen(sock)
	if err != nil {
		t.Fatal(err)
	}
	m := silentGuest{t: t, closed: make(chan struct{})}
	d := &Daemon{vm: m, log: slog.New(slog.NewTextHandler(io.Discard, nil))}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { d.relay(ctx, l); close(done) }()
	defer func() {
		cancel()
		<-done
	}()
	c, err := net.Dial("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	io.WriteString(c, "hello\n")
	c.Close()
	select {
	case <-m.closed:
	case <-time.After(time.Minute):
		t.Fatal("the client left agent.sock, and hostd still holds the guest's channel open")
	}
}

// TestControlSocketServesAfterRunningOutOfDescriptors: hostd.sock's
// server retries a failed Accept (EMFILE) instead of going deaf.
func TestControlSocketServesAfterRunningOutOfDescriptors(t *testing.T) {
	sock := t.TempDir() + "/hostd.sock"
	inner, err := unixsock.Listen(sock)
	if err != nil {
		t.Fatal(err)
	}
	l := &emfileListener{Listener: inner}
	l.fail.Store(5)
	g := controlwire.NewServer(&controlServer{d: &Daemon{name: "test", cfg: &instance.Config{Arch: "arm64"}, events: newEvents()}})
	go g.Serve(l)
	defer g.Close()
	c := controlwire.NewClient(sock)
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if st, err := c.Status(ctx); err != nil || st.Name != "test" {
		t.Fatalf("after 5 failed accepts: %v, %v", st, err)
	}
}

func TestNetworkStatsCarryTheLimits(t *testing.T) {
	first, last := time.Unix(1_800_000_000, 0), time.Unix(1_800_000_100, 0)
	n := networkStats(audit.Stats{Flows: 20000, Blocked: 18976}, netstack.FlowStats{Active: 1024, MaxFlows: 1024, Refused: 18976, FirstRefused: first, LastRefused: last}, nil)
	if n.Flows != 20000 || n.Blocked != 18976 || n.ActiveFlows != 1024 || n.MaxFlows != 1024 || n.RefusedFlows != 18976 ||
		!n.FirstRefused.Equal(first) || !n.LastRefused.Equal(last) {
		t.Fatalf("%v", n)
	}
	if n := networkStats(audit.Stats{}, netstack.FlowStats{MaxFlows: 1024}, nil); !n.FirstRefused.IsZero() || !n.LastRefused.IsZero() || len(n.ServeFailures) != 0 {
		t.Fatalf("no refusal, yet times: %v", n)
	}
}

// TestStatusReportsAServiceThatStopped: a service of the guest's network
// that stopped serving reaches status through the control API.
func TestStatusReportsAServiceThatStopped(t *testing.T) {
	at := time.Unix(1_800_000_000, 0)
	n := networkStats(audit.Stats{}, netstack.FlowStats{}, []netstack.ServeFailure{{Service: "proxy", Err: "accept: broken", At: at}})
	if len(n.ServeFailures) != 1 || n.ServeFailures[0].Service != "proxy" || n.ServeFailures[0].Error != "accept: broken" || !n.ServeFailures[0].At.Equal(at) {
		t.Fatalf("%v", n)
	}
	c := newControlTest(t)
	c.d.cfg = &instance.Config{Arch: "arm64"}
	r, err := c.api.Status(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if r.Network == nil || len(r.Network.ServeFailures) != 0 {
		t.Fatalf("a network whose services all serve: %v", r.Network)
	}
}
