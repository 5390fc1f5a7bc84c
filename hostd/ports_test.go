package hostd

import (
	"context"
	"maps"
	"math/rand/v2"
	"net"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/coworkhq/cowork/hostd/controlwire"
	"github.com/coworkhq/cowork/hostd/machine/machinetest"
	"github.com/coworkhq/cowork/hostd/netstack"
	"github.com/coworkhq/cowork/internal/agentcall"
)

// A publish request a client got wrong is refused as invalid_argument
// before hostd looks at its network (none runs here).
func TestPublishRefusesBadRequests(t *testing.T) {
	s := &controlServer{d: &Daemon{}}
	for _, req := range []controlwire.PublishRequest{
		{HostAddr: "localhost:80", GuestPort: 80},
		{HostAddr: "127.0.0.1", GuestPort: 80},
		{HostAddr: "127.0.0.1:70000", GuestPort: 80},
		{HostAddr: "127.0.0.1:x", GuestPort: 80},
		{HostAddr: "127.0.0.1:0", GuestPort: 0},
		{HostAddr: "127.0.0.1:0", GuestPort: 65536},
		{HostAddr: "127.0.0.1:0", GuestPort: 80, Proto: "sctp"},
	} {
		if _, err := s.Publish(context.Background(), req); controlwire.CodeOf(err) != controlwire.CodeInvalidArgument {
			t.Errorf("%+v: %v, want invalid_argument", req, err)
		}
	}
	if _, err := s.Publish(context.Background(), controlwire.PublishRequest{HostAddr: "127.0.0.1:0", GuestPort: 80}); controlwire.CodeOf(err) != controlwire.CodeUnavailable {
		t.Errorf("a good request with no network: %v, want unavailable", err)
	}
}

// freePort is a port of this machine, below the ephemeral range (where
// the follower takes no UDP port), that nothing listens on now, TCP or
// UDP.
func freePort(t *testing.T) int {
	t.Helper()
	for port := 20000 + rand.IntN(10000); port < 32767; port++ {
		addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
		l, err := net.Listen("tcp", addr)
		if err != nil {
			continue
		}
		u, err := net.ListenPacket("udp", addr)
		l.Close()
		if err != nil {
			continue
		}
		u.Close()
		return port
	}
	t.Fatal("no free port")
	return 0
}

// autoPorts are the ports hostd follows, by guest port.
func autoPorts(r *hostdRun) map[int]controlwire.Port {
	out := map[int]controlwire.Port{}
	for _, p := range r.status().Ports {
		if p.Auto {
			out[p.GuestPort] = p
		}
	}
	return out
}

// waitAuto waits until the followed ports are want (guest ports).
func waitAuto(t *testing.T, r *hostdRun, want ...int) map[int]controlwire.Port {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		got := autoPorts(r)
		keys := slices.Sorted(maps.Keys(got))
		slices.Sort(want)
		if slices.Equal(keys, want) {
			return got
		}
		if time.Now().After(deadline) {
			t.Fatalf("followed ports %v, want %v", keys, want)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// With --auto, hostd publishes on 127.0.0.1 what the guest listens on
// (1024 and up, on every address or its own), never what it listens on
// only on loopback, nor a port this machine uses or the user published or
// took back; it takes them back as the guest stops, and all at off.
func TestAutoPublishFollowsTheGuest(t *testing.T) {
	defer func(d time.Duration) { autoPublishEvery = d }(autoPublishEvery)
	autoPublishEvery = 20 * time.Millisecond
	h := newHostdTest(t, machinetest.Guest{})
	r, m := h.ready(t)
	ctx := context.Background()
	if st := r.status(); st.AutoPublish {
		t.Fatal("following before asked")
	}
	a, b, c := freePort(t), freePort(t), freePort(t)
	busy, err := net.Listen("tcp", "127.0.0.1:0") // this machine's own
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	taken := busy.Addr().(*net.TCPAddr).Port
	m.Listen(t,
		agentcall.Listener{Proto: "tcp", Addr: "0.0.0.0", Port: a},
		agentcall.Listener{Proto: "udp", Addr: "0.0.0.0", Port: b},
		agentcall.Listener{Proto: "tcp", Addr: "127.0.0.1", Port: c}, // the guest's loopback: unreachable
		agentcall.Listener{Proto: "tcp", Addr: "0.0.0.0", Port: 22},  // below 1024
		agentcall.Listener{Proto: "tcp", Addr: "0.0.0.0", Port: taken},
	)
	if err := r.api.AutoPublish(ctx, true); err != nil {
		t.Fatal(err)
	}
	got := waitAuto(t, r, a, b)
	if got[a].HostAddr != net.JoinHostPort("127.0.0.1", strconv.Itoa(a)) || got[a].Proto != "" || got[b].Proto != "udp" {
		t.Errorf("followed %+v", got)
	}
	if !r.status().AutoPublish {
		t.Error("status does not say it follows")
	}
	if conn, err := net.Dial("tcp", got[a].HostAddr); err != nil {
		t.Errorf("the followed port does not listen: %v", err)
	} else {
		conn.Close()
	}

	// The user takes one back: it stays back while the guest listens.
	if _, err := r.api.Unpublish(ctx, strconv.Itoa(a)); err != nil {
		t.Fatal(err)
	}
	time.Sleep(10 * autoPublishEvery)
	waitAuto(t, r, b)
	// So does a port the user published and takes back.
	d := freePort(t)
	if _, err := r.api.Publish(ctx, controlwire.PublishRequest{HostAddr: "127.0.0.1:0", GuestPort: d}); err != nil {
		t.Fatal(err)
	}
	m.Listen(t, agentcall.Listener{Proto: "tcp", Addr: "0.0.0.0", Port: a}, agentcall.Listener{Proto: "udp", Addr: "0.0.0.0", Port: b},
		agentcall.Listener{Proto: "tcp", Addr: "0.0.0.0", Port: d})
	time.Sleep(10 * autoPublishEvery)
	waitAuto(t, r, b) // d is the user's
	if _, err := r.api.Unpublish(ctx, strconv.Itoa(d)); err != nil {
		t.Fatal(err)
	}
	time.Sleep(10 * autoPublishEvery)
	waitAuto(t, r, b)
	// The guest stops listening on b, and listens on c on every address.
	m.Listen(t, agentcall.Listener{Proto: "tcp", Addr: "0.0.0.0", Port: a}, agentcall.Listener{Proto: "tcp", Addr: "0.0.0.0", Port: c})
	waitAuto(t, r, c)
	if err := r.api.AutoPublish(ctx, false); err != nil {
		t.Fatal(err)
	}
	if got := autoPorts(r); len(got) != 0 || r.status().AutoPublish {
		t.Errorf("after off: still following %v", got)
	}
}

// Which of the guest's listeners a published port can reach and the
// follower takes: every address or the guest's own, 1024 and up, UDP
// below the ephemeral range.
func TestWantedPorts(t *testing.T) {
	got := wantedPorts([]agentcall.Listener{
		{Proto: "tcp", Addr: "0.0.0.0", Port: 8000},
		{Proto: "tcp", Addr: "::", Port: 3000},
		{Proto: "tcp", Addr: "192.168.127.2", Port: 5000},
		{Proto: "tcp", Addr: "127.0.0.1", Port: 5432},
		{Proto: "tcp", Addr: "::1", Port: 6000},
		{Proto: "tcp", Addr: "172.17.0.1", Port: 7000},
		{Proto: "tcp", Addr: "0.0.0.0", Port: 1023},
		{Proto: "udp", Addr: "0.0.0.0", Port: 5353},
		{Proto: "udp", Addr: "0.0.0.0", Port: 40000},
	})
	want := map[portKey]bool{{"", 8000}: true, {"", 3000}: true, {"", 5000}: true, {netstack.UDP, 5353}: true}
	if !maps.Equal(got, want) {
		t.Errorf("wanted %v, want %v", got, want)
	}
}
