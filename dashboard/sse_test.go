package dashboard

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/coworkhq/cowork/hostd/instance"
	"github.com/coworkhq/cowork/hostd/netstack/audit"
)

// A record hostd appends to an instance's network.jsonl reaches an open
// page within a second or so (the log is polled every 200 ms), after
// the instance list and the backlog; so does one of an instance made
// after the server started.
func TestARecordAppendedAppearsOnTheStream(t *testing.T) {
	p := home(t)
	writeRecords(t, p, &audit.Record{Time: time.Now().Add(-time.Minute), Kind: audit.KindTCP, Verdict: audit.Allow, Name: "before.example", Dst: "198.51.100.1:443"})
	s := start(t, Options{})
	st := openStream(t, s)
	st.next(t, "hello", 5*time.Second)
	var list []Instance
	if err := json.Unmarshal([]byte(st.next(t, "instances", 5*time.Second).data), &list); err != nil || len(list) != 1 ||
		list[0].Name != instance.DefaultName || list[0].State != "stopped" || list[0].CPUs != 2 || list[0].Policy != "default" {
		t.Fatalf("instances %+v: %v", list, err)
	}
	if ev := recordOf(t, st.next(t, "record", 5*time.Second)); ev.Instance != instance.DefaultName || ev.Record["name"] != "before.example" {
		t.Fatalf("backlog: %+v", ev)
	}

	at := time.Now()
	writeRecords(t, p, &audit.Record{Kind: audit.KindTCP, Verdict: audit.Deny, Name: "late.example", Dst: "203.0.113.9:443", Rule: "deny late.example"})
	ev := recordOf(t, st.next(t, "record", 3*time.Second))
	if ev.Record["name"] != "late.example" || ev.Record["verdict"] != "deny" || ev.Log != LogNetwork {
		t.Fatalf("live: %+v", ev)
	}
	t.Logf("a record reached the page %s after it was written", time.Since(at).Round(time.Millisecond))

	other := addInstance(t, instance.Config{Name: "other", CPUs: 4})
	writeRecords(t, other, &audit.Record{Kind: audit.KindDNS, Verdict: audit.Allow, Name: "pypi.org", QType: "A", RCode: "NOERROR"})
	// The new instance's list and its first record, in either order.
	sawList, sawRecord := false, false
	for deadline := time.After(3 * time.Second); !sawList || !sawRecord; {
		select {
		case e := <-st.events:
			switch e.kind {
			case "instances":
				sawList = json.Unmarshal([]byte(e.data), &list) == nil && len(list) == 2 && list[0].Name == "other" && list[0].CPUs == 4
			case "record":
				ev := recordOf(t, e)
				sawRecord = ev.Instance == "other" && ev.Record["name"] == "pypi.org"
			}
		case <-deadline:
			t.Fatalf("a new instance: listed %v (%+v), its record shown %v", sawList, list, sawRecord)
		}
	}
}

type decoded struct {
	Event
	Record map[string]any `json:"record"`
}

func recordOf(t testing.TB, ev event) decoded {
	t.Helper()
	var d decoded
	if err := json.Unmarshal([]byte(ev.data), &d); err != nil {
		t.Fatalf("%q: %v", ev.data, err)
	}
	return d
}

// A page gets the newest records of all the logs when it connects, at
// most Backlog of them, whatever order the logs were read in.
func TestTheBacklogIsBoundedToTheNewest(t *testing.T) {
	p := home(t)
	other := addInstance(t, instance.Config{Name: "other"})
	now := time.Now()
	var recs, otherRecs []*audit.Record
	for i := range 20 {
		// The two logs interleave in time: the newest five are
		// sandbox's 19 and 18, and other's 19, 18 and 17.
		recs = append(recs, &audit.Record{Time: now.Add(time.Duration(2*i-40) * time.Second), Kind: audit.KindTCP, Verdict: audit.Allow, Name: fmt.Sprintf("s%d.example", i)})
		otherRecs = append(otherRecs, &audit.Record{Time: now.Add(time.Duration(2*i-39) * time.Second), Kind: audit.KindTCP, Verdict: audit.Allow, Name: fmt.Sprintf("o%d.example", i)})
	}
	writeRecords(t, p, recs...)
	writeRecords(t, other, otherRecs...)
	s := start(t, Options{Backlog: 5})
	deadline := time.Now().Add(5 * time.Second)
	published := func() int64 {
		s.feed.mu.Lock()
		defer s.feed.mu.Unlock()
		return s.feed.nextID
	}
	for published() < 40 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	var state struct{ Records []decoded }
	if err := json.NewDecoder(get(t, s, "/api/state", nil).Body).Decode(&state); err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, r := range state.Records {
		names = append(names, r.Record["name"].(string))
	}
	if got := strings.Join(names, " "); got != "o17.example s18.example o18.example s19.example o19.example" {
		t.Fatalf("backlog %s", got)
	}
	st := openStream(t, s)
	for _, want := range names {
		if ev := recordOf(t, st.next(t, "record", 2*time.Second)); ev.Record["name"] != want {
			t.Fatalf("stream's backlog: %v, want %s", ev.Record["name"], want)
		}
	}
	select {
	case ev := <-st.events:
		if ev.kind == "record" {
			t.Fatalf("a record past the backlog: %s", ev.data)
		}
	case <-time.After(300 * time.Millisecond):
	}
}

// A client that stops reading is dropped once its queue is full: the
// records go on to the other clients, and publishing never waits.
func TestASlowClientIsDroppedNotWaitedFor(t *testing.T) {
	home(t)
	s := start(t, Options{queue: 256 << 10})
	// A page that connects and never reads again.
	u := strings.TrimPrefix(s.URL(), "http://")
	host, q, _ := strings.Cut(u, "/")
	c, err := net.Dial("tcp", host)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	fmt.Fprintf(c, "GET /events%s HTTP/1.1\r\nHost: %s\r\n\r\n", q, host)
	fast := openStream(t, s)
	deadline := time.Now().Add(5 * time.Second)
	for s.feed.clients() < 2 {
		if time.Now().After(deadline) {
			t.Fatal("the clients never connected")
		}
		time.Sleep(10 * time.Millisecond)
	}
	// Records until the slow client is dropped: more than its socket's
	// buffers and its queue hold, at a pace the fast one keeps up with.
	go func() {
		for range fast.events {
		}
	}()
	big := strings.Repeat("x", maxField)
	done := make(chan int)
	go func() {
		n := 0
		for ; n < 128<<10 && s.feed.clients() == 2; n++ {
			s.feed.publishRecord(&Event{Instance: "sandbox", Record: map[string]any{"name": big, "n": n}, time: time.Now()})
			if n%64 == 0 {
				time.Sleep(time.Millisecond)
			}
		}
		done <- n
	}()
	select {
	case n := <-done:
		t.Logf("dropped after %d records (%d MiB)", n, n*len(big)>>20)
	case <-time.After(20 * time.Second):
		t.Fatal("publishing waited on a slow client")
	}
	if n := s.feed.clients(); n != 1 {
		t.Fatalf("%d clients after the slow one fell behind, want 1 (the fast one)", n)
	}
	s.feed.mu.Lock()
	for sub := range s.feed.subs {
		if sub.bytes > 256<<10 {
			t.Errorf("a queue of %d bytes", sub.bytes)
		}
	}
	s.feed.mu.Unlock()
	// The dropped page's stream ends (once it reads what was sent), so
	// that its browser reconnects and starts again from the backlog.
	c.SetReadDeadline(time.Now().Add(15 * time.Second))
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatal(err)
	}
	if n, err := io.Copy(io.Discard, resp.Body); err != nil {
		t.Fatalf("the dropped stream did not end: %v after %d bytes", err, n)
	}
}

// The queue of a client is bounded in bytes; the one that overflows it
// is dropped, and told so by its dropped channel.
func TestTheQueueIsBounded(t *testing.T) {
	f := newFeed(10, 1000, 2)
	a, _ := f.subscribe()
	b, _ := f.subscribe()
	if c, _ := f.subscribe(); c != nil {
		t.Fatal("a third client past maxSubs")
	}
	for i := 0; i < 20; i++ {
		f.publishRecord(&Event{Record: map[string]any{"name": strings.Repeat("y", 80)}, time: time.Now()})
		b.take()
	}
	select {
	case <-a.dropped:
	default:
		t.Fatal("the client that never read was not dropped")
	}
	if a.bytes > 1000 || f.clients() != 1 {
		t.Fatalf("queue %d bytes, %d clients", a.bytes, f.clients())
	}
	if len(f.backlog) != 10 {
		t.Fatalf("backlog %d", len(f.backlog))
	}
}

// A page that goes frees its place at once: its stream ends and it is
// no longer counted, so closing tabs never leaves the dashboard full.
func TestAClosedPageFreesItsPlace(t *testing.T) {
	home(t)
	s := start(t, Options{maxSubs: 2})
	for i := range 5 {
		st := openStream(t, s)
		st.next(t, "hello", 5*time.Second)
		if n := s.feed.clients(); n != 1 {
			t.Fatalf("page %d: %d clients", i, n)
		}
		st.resp.Body.Close()
		deadline := time.Now().Add(2 * time.Second)
		for s.feed.clients() != 0 {
			if time.Now().After(deadline) {
				t.Fatalf("page %d closed: still %d clients after 2s", i, s.feed.clients())
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
}
