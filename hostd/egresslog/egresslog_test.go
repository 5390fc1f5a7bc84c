package egresslog

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/coworkhq/cowork/hostd/netstack/audit"
	"github.com/coworkhq/cowork/internal/termsafe/termsafetest"
)

// testLog is an audit log in a fresh folder, rotated at maxSize (0: the
// default size).
func testLog(t *testing.T, maxSize int64) (*audit.Log, string) {
	t.Helper()
	dir := t.TempDir()
	path := filepath.Join(dir, "network.jsonl")
	l, err := audit.Open(path, audit.Options{MaxSize: maxSize, Keep: audit.DefaultKeep,
		Key: filepath.Join(dir, "audit.key"), Head: filepath.Join(dir, "audit.head")})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	return l, path
}

func write(t *testing.T, l *audit.Log, at time.Time, name string) {
	t.Helper()
	if err := l.Write(&audit.Record{Time: at, Kind: audit.KindTCP, Verdict: audit.Allow, Name: name, Dst: "198.51.100.1:443", Client: "10.244.1.7:40000"}); err != nil {
		t.Fatal(err)
	}
}

// serve runs s on a loopback port until the test ends; it returns the
// address.
func serve(t *testing.T, s *Server) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Serve(ctx, l) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("Serve: %v", err)
			}
		case <-time.After(20 * time.Second):
			t.Error("Serve did not end")
		}
	})
	return l.Addr().String()
}

func dial(t *testing.T, addr string) net.Conn {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	c.SetDeadline(time.Now().Add(30 * time.Second)) // no test waits longer
	t.Cleanup(func() { c.Close() })
	return c
}

// names reads the records of req from the server at addr, by name.
func names(t *testing.T, addr string, req Request) ([]string, error) {
	t.Helper()
	var got []string
	_, err := Read(dial(t, addr), req, func(b []byte) error {
		r, err := audit.ParseLine(b)
		if err != nil {
			return err
		}
		got = append(got, r.Name)
		return nil
	})
	return got, err
}

// The log is served from the time asked for; all of it when none is.
func TestServesTheLogSince(t *testing.T) {
	l, path := testLog(t, 0)
	now := time.Now()
	write(t, l, now.Add(-2*time.Hour), "old.example")
	write(t, l, now.Add(-time.Minute), "recent.example")
	addr := serve(t, &Server{Path: path})
	got, err := names(t, addr, Request{Since: now.Add(-10 * time.Minute).Format(time.RFC3339)})
	if err != nil || strings.Join(got, " ") != "recent.example" {
		t.Errorf("since 10 minutes ago: %q, %v", got, err)
	}
	got, err = names(t, addr, Request{})
	if err != nil || strings.Join(got, " ") != "old.example recent.example" {
		t.Errorf("all of it: %q, %v", got, err)
	}
	if _, err := names(t, addr, Request{Since: "yesterday"}); !errors.As(err, new(*RefusedError)) || !strings.Contains(err.Error(), "RFC 3339") {
		t.Errorf("since yesterday: %v", err)
	}
}

// follower is a client following the log at addr, its records' names
// sent on a channel; the channel closes when the stream ends, and err
// says why.
type follower struct {
	c     net.Conn
	names chan string
	err   error
	done  chan struct{}
}

func follow(t *testing.T, addr string) *follower { return followIdle(t, addr, readIdle) }

// followIdle is follow, for a client that waits at most idle for a line.
func followIdle(t *testing.T, addr string, idle time.Duration) *follower {
	f := &follower{c: dial(t, addr), names: make(chan string, 1000), done: make(chan struct{})}
	go func() {
		defer close(f.done)
		defer close(f.names)
		_, f.err = read(f.c, Request{Follow: true}, func(b []byte) error {
			r, err := audit.ParseLine(b)
			if err != nil {
				return err
			}
			f.names <- r.Name
			return nil
		}, idle)
	}()
	return f
}

func (f *follower) next(t *testing.T) string {
	t.Helper()
	select {
	case n, ok := <-f.names:
		if !ok {
			t.Fatalf("the stream ended: %v", f.err)
		}
		return n
	case <-time.After(20 * time.Second):
		t.Fatal("no record came")
	}
	return ""
}

// A follower gets the records written after it asked, across the log's
// rotations, in order, none lost; when the server stops it is told so.
func TestFollowsTheLogAcrossRotations(t *testing.T) {
	l, path := testLog(t, 4<<10) // a few records a file
	write(t, l, time.Now(), "before")
	addr := serve(t, &Server{Path: path})
	f := follow(t, addr)
	if n := f.next(t); n != "before" {
		t.Fatalf("first record %q", n)
	}
	for i := range 60 { // rotated many times over while followed
		write(t, l, time.Now(), fmt.Sprintf("host%d.example", i))
		if i%7 == 0 {
			time.Sleep(250 * time.Millisecond) // past a poll of the follower
		}
	}
	for i := range 60 {
		if n, want := f.next(t), fmt.Sprintf("host%d.example", i); n != want {
			t.Fatalf("record %d is %q, want %q", i, n, want)
		}
	}
	if _, err := os.Stat(path + ".3"); err != nil {
		t.Errorf("the log was not rotated as often as the test means: %v", err)
	}
}

// A server that stops ends its followers' streams saying why.
func TestFollowersAreToldTheServerStops(t *testing.T) {
	al, path := testLog(t, 0)
	write(t, al, time.Now(), "before")
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- (&Server{Path: path}).Serve(ctx, l) }()
	f := follow(t, l.Addr().String())
	f.next(t)
	cancel()
	<-f.done
	if !errors.As(f.err, new(*RefusedError)) || !strings.Contains(f.err.Error(), "stopping") {
		t.Errorf("a follower of a stopping server: %v", f.err)
	}
	if err := <-done; err != nil {
		t.Errorf("Serve: %v", err)
	}
}

// The server listens on loopback only: the guests share the pod's
// network, and must never read the namespace's log.
func TestServesOnLoopbackOnly(t *testing.T) {
	for _, addr := range []string{"0.0.0.0:0", "[::]:0"} {
		l, err := net.Listen("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		// Bounded: a server that took the listener would serve.
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		err = (&Server{Path: "/nonexistent"}).Serve(ctx, l)
		cancel()
		if err == nil || !strings.Contains(err.Error(), "is not a loopback address") {
			t.Errorf("Serve on %s: %v", l.Addr(), err)
		}
		if _, err := l.Accept(); !errors.Is(err, net.ErrClosed) {
			t.Errorf("the refused listener on %s is still open: %v", addr, err)
		}
	}
}

// What one client can make the pod do is bounded: a request line of at
// most MaxRequest bytes (one at the bound is taken), sent in time; a
// request that is no log request is refused.
func TestRequestsAreBounded(t *testing.T) {
	_, path := testLog(t, 0)
	addr := serve(t, &Server{Path: path, RequestTimeout: 300 * time.Millisecond})
	ask := func(req string) (string, error) {
		c := dial(t, addr)
		if req != "" {
			if _, err := io.WriteString(c, req); err != nil {
				return "", err
			}
		}
		line, err := bufio.NewReader(c).ReadString('\n')
		return line, err
	}
	atBound := `{"since":""}` + strings.Repeat(" ", MaxRequest-len(`{"since":""}`)) + "\n"
	if line, err := ask(atBound); err != nil || line != `{"ready":true,"heartbeat":true}`+"\n" {
		t.Errorf("a request of %d bytes: %q, %v", len(atBound)-1, line, err)
	}
	over := `{"since":""}` + strings.Repeat(" ", MaxRequest+1-len(`{"since":""}`)) + "\n"
	if line, err := ask(over); err != nil || !strings.Contains(line, "at most 4096 bytes") {
		t.Errorf("a request of %d bytes: %q, %v", len(over)-1, line, err)
	}
	// Less than the server drains before it closes (refuse): more, and
	// its close with data unread resets the connection, the answer with it.
	if line, err := ask(strings.Repeat("x", 60<<10)); err != nil || !strings.Contains(line, "at most 4096 bytes") {
		t.Errorf("60 KiB with no newline: %q, %v", line, err)
	}
	start := time.Now()
	if line, err := ask(""); err != nil || !strings.Contains(line, "no request came in time") || time.Since(start) > 10*time.Second {
		t.Errorf("no request: %q, %v after %s", line, err, time.Since(start))
	}
	for _, req := range []string{"{not json\n", `{"since":"","follow":true,"path":"/etc/shadow"}` + "\n", `{"follow":"yes"}` + "\n"} {
		if line, err := ask(req); err != nil || !strings.Contains(line, "is not a log request") {
			t.Errorf("%q: %q, %v", req, line, err)
		}
	}
}

// At most MaxClients read at once: one more is refused, saying so; a
// follower that goes away frees its place at once, with no record
// written since.
func TestClientsAreBounded(t *testing.T) {
	l, path := testLog(t, 0)
	write(t, l, time.Now(), "before")
	addr := serve(t, &Server{Path: path, MaxClients: 2})
	a, b := follow(t, addr), follow(t, addr)
	a.next(t)
	b.next(t)
	if _, err := names(t, addr, Request{}); err == nil || !strings.Contains(err.Error(), "serves 2 readers of its log at once") {
		t.Fatalf("a third client: %v", err)
	}
	a.c.Close()
	<-a.done
	var err error
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		if _, err = names(t, addr, Request{}); err == nil {
			break
		}
	}
	if err != nil {
		t.Errorf("a client once a follower went away: %v", err)
	}
}

// A client takes from a server no more than bounded JSON lines of
// replies, and shows its messages inert.
func TestReadTakesOnlyWhatItShould(t *testing.T) {
	b, _ := json.Marshal(termsafetest.Attack + strings.Repeat("x", 2000))
	hostile := string(b)
	for _, c := range []struct {
		name, answer string
		want         string
		noAnswer     bool
	}{
		{"nothing", "", "no answer", true},
		{"no ready line", `{"record":{"kind":"tcp"}}` + "\n", "no ready line", false},
		{"not JSON", "HTTP/1.1 400 Bad Request\r\n", "no reply", false},
		{"a line over the bound", `{"ready":true}` + "\n" + `{"record":"` + strings.Repeat("a", MaxReply) + "\"}\n", "over", false},
		{"cut off", `{"ready":true}` + "\n" + `{"record":{}}` + "\n", "broke off", false},
		{"a hostile message", `{"end":{"error":` + hostile + `}}` + "\n", "xxx", false},
	} {
		here, there := net.Pipe()
		go func() {
			bufio.NewReader(there).ReadString('\n')
			io.WriteString(there, c.answer)
			there.Close()
		}()
		_, err := Read(here, Request{}, func([]byte) error { return nil })
		if err == nil || !strings.Contains(err.Error(), c.want) || errors.As(err, new(*NoAnswerError)) != c.noAnswer || len(err.Error()) > 1200 {
			t.Errorf("%s: %.200v", c.name, err)
		}
		if err != nil {
			termsafetest.Check(t, c.name, err.Error(), false)
		}
	}
}

// Many clients at once, reading and going, leave the server serving.
func TestManyClients(t *testing.T) {
	l, path := testLog(t, 0)
	for i := range 50 {
		write(t, l, time.Now(), fmt.Sprintf("h%d", i))
	}
	addr := serve(t, &Server{Path: path, MaxClients: 4})
	var wg sync.WaitGroup
	var mu sync.Mutex
	served := 0
	for range 20 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			got, err := names(t, addr, Request{})
			if err == nil && len(got) == 50 {
				mu.Lock()
				served++
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	if served == 0 {
		t.Error("no client was served")
	}
	if got, err := names(t, addr, Request{}); err != nil || len(got) != 50 {
		t.Errorf("after the crowd: %d records, %v", len(got), err)
	}
}

// A record the server would send longer than a client takes (a damaged
// line, its bad bytes re-encoded six times longer) is skipped and
// counted, and the records after it still come.
func TestOverlongRecordsAreSkipped(t *testing.T) {
	l, path := testLog(t, 0)
	write(t, l, time.Now(), "before")
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		t.Fatal(err)
	}
	at, _ := time.Now().MarshalJSON()
	fmt.Fprintf(f, `{"time":%s,"kind":"tcp","verdict":"allow","name":"%s"}`+"\n", at, strings.Repeat("\xff", 400<<10))
	f.Close()
	write(t, l, time.Now(), "after")
	addr := serve(t, &Server{Path: path})
	var got []string
	skipped, err := Read(dial(t, addr), Request{}, func(b []byte) error {
		if len(b) >= MaxRecord {
			t.Errorf("a record line of %d bytes", len(b))
		}
		r, err := audit.ParseLine(b)
		if err != nil {
			return err
		}
		got = append(got, r.Name)
		return nil
	})
	if err != nil || skipped != 1 || strings.Join(got, " ") != "before after" {
		t.Errorf("%q, %d skipped, %v", got, skipped, err)
	}
}

// bigLog is a log of n records of about size bytes each, written as is:
// more than a client's connection buffers hold.
func bigLog(t *testing.T, n, size int) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "network.jsonl")
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	w := bufio.NewWriter(f)
	at, _ := time.Now().MarshalJSON()
	for i := range n {
		fmt.Fprintf(w, `{"time":%s,"kind":"tcp","verdict":"allow","name":"h%d.example","url":"http://h/%s"}`+"\n", at, i, strings.Repeat("p", size))
	}
	if err := w.Flush(); err != nil {
		t.Fatal(err)
	}
	f.Close()
	return path
}

// A server that stops returns within a second or so, whatever its
// clients do: one that never sent its request, one that stopped reading
// the log's backlog, one that stopped reading what it follows. The pod
// has 30 s to stop, and closes its audit log once Serve returns.
func TestStopsInTimeWhateverTheClientsDo(t *testing.T) {
	path := bigLog(t, 64, 512<<10) // 32 MiB
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- (&Server{Path: path}).Serve(ctx, l) }()
	dial(t, l.Addr().String()) // no request
	for _, req := range []string{`{}`, `{"follow":true}`} {
		c := dial(t, l.Addr().String())
		if _, err := io.WriteString(c, req+"\n"); err != nil {
			t.Fatal(err)
		}
	}
	time.Sleep(500 * time.Millisecond) // the server fills their connections
	cancel()
	start := time.Now()
	select {
	case err := <-done:
		if d := time.Since(start); err != nil || d > 2*time.Second {
			t.Errorf("Serve returned %v after %s", err, d.Round(time.Millisecond))
		}
	case <-time.After(20 * time.Second):
		t.Fatal("Serve did not return: its stalled clients hold it")
	}
}

// A stream of the log's backlog ends once the server stops, saying so:
// the server does not read it on to its end.
func TestAStopCutsABacklogShort(t *testing.T) {
	path := bigLog(t, 2000, 10)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	here, there := net.Pipe() // no buffer: the server writes as the client reads
	defer here.Close()
	go func() {
		defer there.Close()
		(&Server{Path: path}).serve(ctx, there)
	}()
	n := 0
	_, err := Read(here, Request{}, func([]byte) error {
		n++
		cancel()
		return nil
	})
	if !errors.As(err, new(*RefusedError)) || !strings.Contains(err.Error(), "stopping") || n > 3 {
		t.Errorf("after %d records: %v", n, err)
	}
}

// A follower of an idle log gets a heartbeat every Server.Heartbeat: a
// client that waits a few of them for a line goes on following, and
// gets the next record when it comes.
func TestHeartbeatsKeepAFollowerOfAnIdleLog(t *testing.T) {
	l, path := testLog(t, 0)
	write(t, l, time.Now(), "before")
	addr := serve(t, &Server{Path: path, Heartbeat: 50 * time.Millisecond})
	f := followIdle(t, addr, 500*time.Millisecond)
	f.next(t)
	select {
	case <-f.done:
		t.Fatalf("the stream of an idle log ended: %v", f.err)
	case <-time.After(1500 * time.Millisecond):
	}
	write(t, l, time.Now(), "after")
	if n := f.next(t); n != "after" {
		t.Errorf("the record after the silence: %q", n)
	}
}

// A follower of an idle log that stopped reading is dropped once a
// heartbeat waited WriteTimeout, and its place freed: without them, the
// server would write to it only when a record came.
func TestAStalledFollowerOfAnIdleLogIsDropped(t *testing.T) {
	_, path := testLog(t, 0)
	here, there := net.Pipe() // no buffer: a write waits for the reader
	defer here.Close()
	done := make(chan struct{})
	go func() {
		defer close(done)
		defer there.Close()
		(&Server{Path: path, Heartbeat: 50 * time.Millisecond, WriteTimeout: 200 * time.Millisecond}).serve(context.Background(), there)
	}()
	io.WriteString(here, `{"follow":true}`+"\n")
	if line, err := bufio.NewReader(here).ReadString('\n'); err != nil || !strings.Contains(line, `"ready":true`) {
		t.Fatalf("the ready line: %q, %v", line, err)
	}
	select { // and reads no more
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("the server still serves a follower that stopped reading")
	}
}

// A client waits at most idle for a line, with each's time left out:
// from a server that said it sends heartbeats, for any line; from one
// that did not (an older one), for its first only. It then says the pod
// stopped answering.
func TestReadWaitsForASilentServerABoundedTime(t *testing.T) {
	const idle = 300 * time.Millisecond
	beat := "{}\n"
	for _, c := range []struct {
		name  string
		lines []string      // sent one by one, pause apart; then silence
		pause time.Duration // between the lines
		slow  time.Duration // each's time
		want  string        // in the error; "" for none
		least time.Duration // Read lasts at least this long
	}{
		{"no answer", nil, 0, 0, "sent nothing for 300ms", 0},
		{"heartbeats, then silence", append([]string{`{"ready":true,"heartbeat":true}` + "\n"}, slices.Repeat([]string{beat}, 10)...), 100 * time.Millisecond, 0, "sent nothing for 300ms", time.Second},
		{"a slow reader", []string{`{"ready":true,"heartbeat":true}` + "\n", `{"record":{}}` + "\n", `{"end":{}}` + "\n"}, 0, time.Second, "", time.Second},
		{"an older server's silence", []string{`{"ready":true}` + "\n", `{"end":{}}` + "\n"}, time.Second, 0, "", time.Second},
	} {
		here, there := net.Pipe()
		go func() {
			bufio.NewReader(there).ReadString('\n')
			for i, l := range c.lines {
				if i > 0 {
					time.Sleep(c.pause)
				}
				if _, err := io.WriteString(there, l); err != nil {
					return
				}
			}
			time.Sleep(5 * time.Second) // silent, not gone
			there.Close()
		}()
		start := time.Now()
		_, err := read(here, Request{}, func([]byte) error { time.Sleep(c.slow); return nil }, idle)
		d := time.Since(start)
		if c.want == "" && err != nil || c.want != "" && (err == nil || !strings.Contains(err.Error(), c.want) || !strings.Contains(err.Error(), "stopped answering")) {
			t.Errorf("%s: %v", c.name, err)
		}
		if d < c.least || d > c.least+2*time.Second {
			t.Errorf("%s: Read took %s", c.name, d.Round(time.Millisecond))
		}
		here.Close()
	}
}

// Read passes on no record longer than `cowork proxy` takes a line
// (MaxRecord with its newline, as cowork-hostd-kubevirt log prints it):
// a longer one, up to MaxReply, is skipped and counted, and the records
// after it still come.
func TestReadSkipsARecordLongerThanItsReadersTake(t *testing.T) {
	record := func(n int) string { return `{"record":"` + strings.Repeat("a", n-2) + `"}` + "\n" }
	here, there := net.Pipe()
	defer here.Close()
	go func() {
		defer there.Close()
		bufio.NewReader(there).ReadString('\n')
		io.WriteString(there, `{"ready":true,"heartbeat":true}`+"\n"+
			record(MaxRecord-1)+record(MaxRecord)+record(MaxReply-len(`{"record":}`+"\n"))+`{"record":{"n":1}}`+"\n"+
			`{"end":{"skipped":2}}`+"\n")
	}()
	var got []int
	skipped, err := Read(here, Request{}, func(b []byte) error {
		got = append(got, len(b))
		return nil
	})
	if err != nil || skipped != 4 || fmt.Sprint(got) != fmt.Sprint([]int{MaxRecord - 1, 7}) {
		t.Errorf("records of %v bytes, %d skipped, %v", got, skipped, err)
	}
}
