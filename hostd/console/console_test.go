package console

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// memLog is a log in memory that can be held up, like a slow disk.
type memLog struct {
	mu     sync.Mutex
	b      bytes.Buffer
	gate   chan struct{} // writes wait until it is closed
	closed chan struct{}
}

func newMemLog(held bool) *memLog {
	l := &memLog{gate: make(chan struct{}), closed: make(chan struct{})}
	if !held {
		close(l.gate)
	}
	return l
}

func (l *memLog) Write(p []byte) (int, error) {
	<-l.gate
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}
func (l *memLog) Close() error { close(l.closed); return nil }
func (l *memLog) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// The console reaches the log whole; the first byte is announced, the end
// is kept in memory, and the drain ends when the VM's end closes.
func TestConsoleReachesTheLog(t *testing.T) {
	log := newMemLog(false)
	c, err := New(log)
	if err != nil {
		t.Fatal(err)
	}
	select {
	case <-c.Started():
		t.Fatal("started before the guest printed")
	default:
	}
	var want strings.Builder
	for i := range 20000 {
		fmt.Fprintf(&want, "[%6d.000] line %d\r\n", i, i)
	}
	wrote := make(chan struct{})
	go func() {
		c.W.Write([]byte(want.String()))
		close(wrote)
	}()
	<-c.Started()
	<-wrote
	c.Close(time.Minute)
	if got := log.String(); got != want.String() {
		t.Errorf("the log has %d bytes, want %d", len(got), want.Len())
	}
	tail := c.Tail()
	if len(tail) != TailSize || !strings.HasSuffix(want.String(), string(tail)) {
		t.Errorf("the tail is not the console's last %d bytes (%d)", TailSize, len(tail))
	}
	if c.Dropped() != 0 {
		t.Errorf("dropped %d bytes with a fast log", c.Dropped())
	}
	select {
	case <-log.closed:
	default:
		t.Error("the log was not closed")
	}
}

// A log that stops writing must not stop the guest: the console keeps
// being read, what does not fit in the buffers is dropped and counted,
// and the log says so once it writes again.
func TestASlowLogNeverBlocksTheGuest(t *testing.T) {
	log := newMemLog(true)
	c, err := New(log)
	if err != nil {
		t.Fatal(err)
	}
	const total = 20 << 20 // ten times what the buffers hold
	chunk := bytes.Repeat([]byte("0123456789abcdef"), 4096)
	wrote := make(chan error, 1)
	go func() {
		for n := 0; n < total; n += len(chunk) {
			if _, err := c.W.Write(chunk); err != nil {
				wrote <- err
				return
			}
		}
		wrote <- nil
	}()
	select {
	case err := <-wrote:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(2 * time.Minute):
		t.Fatal("the guest's console blocked while the log was held up")
	}
	c.CloseWriter()
	close(log.gate)
	c.Close(time.Minute)
	// What was kept is what the buffers held, and what was still in the
	// pipe (at most its own buffer) when the log wrote again.
	if c.Dropped() < total-2*maxPending-1<<20 {
		t.Errorf("dropped %d bytes; the buffers hold only %d", c.Dropped(), 2*maxPending)
	}
	got := log.String()
	var reported int64
	for _, m := range regexp.MustCompile(`\[cowork: (\d+) bytes of console output dropped`).FindAllStringSubmatch(got, -1) {
		n, _ := strconv.ParseInt(m[1], 10, 64)
		reported += n
	}
	if reported != c.Dropped() {
		t.Errorf("the log reports %d dropped bytes, want %d", reported, c.Dropped())
	}
	kept := int64(strings.Count(got, "0123456789abcdef") * 16)
	if kept+c.Dropped() != total {
		t.Errorf("kept %d + dropped %d != written %d", kept, c.Dropped(), total)
	}
}

// A guest printing far more than the bound leaves at most (Keep+1) files
// of MaxSize in the instance: serial.log and serial.log.1, .2.
func TestSerialLogIsBounded(t *testing.T) {
	path := filepath.Join(t.TempDir(), "serial.log")
	os.WriteFile(path, []byte("the last boot\n"), 0o600)
	c, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	line := []byte(strings.Repeat("flood ", 20) + "\r\n")
	total := 0
	for total < 4*(DefaultKeep+1)*DefaultMaxSize {
		n, err := c.W.Write(line)
		if err != nil {
			t.Fatal(err)
		}
		total += n
	}
	c.W.Write([]byte("the end\r\n"))
	c.Close(time.Minute)
	var onDisk int64
	matches, _ := filepath.Glob(path + "*")
	for _, m := range matches {
		st, _ := os.Stat(m)
		if st.Size() > DefaultMaxSize {
			t.Errorf("%s holds %d bytes", filepath.Base(m), st.Size())
		}
		onDisk += st.Size()
	}
	if len(matches) != DefaultKeep+1 || onDisk > (DefaultKeep+1)*DefaultMaxSize {
		t.Errorf("%d files, %d bytes for %d printed: %v", len(matches), onDisk, total, matches)
	}
	if b, _ := os.ReadFile(path); c.Dropped() == 0 && !bytes.HasSuffix(b, []byte("the end\r\n")) {
		t.Errorf("serial.log does not end with the console's last line")
	}
	if !bytes.HasSuffix(c.Tail(), []byte("the end\r\n")) {
		t.Errorf("the tail does not end with the console's last line")
	}
}

// Each boot has a serial.log of its own; the last boot's is serial.log.1.
func TestEachBootHasItsOwnLog(t *testing.T) {
	path := filepath.Join(t.TempDir(), "serial.log")
	os.WriteFile(path, []byte("the last boot\n"), 0o600)
	c, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	c.W.Write([]byte("this boot\n"))
	c.Close(time.Minute)
	if b, _ := os.ReadFile(path); string(b) != "this boot\n" {
		t.Errorf("serial.log: %q", b)
	}
	if b, _ := os.ReadFile(path + ".1"); string(b) != "the last boot\n" {
		t.Errorf("serial.log.1: %q", b)
	}
}

// Close returns even when another copy of the VM's end lingers.
func TestCloseWithALingeringWriter(t *testing.T) {
	log := newMemLog(false)
	c, err := New(log)
	if err != nil {
		t.Fatal(err)
	}
	dup, err := unix.Dup(int(c.W.Fd()))
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(dup)
	unix.Write(dup, []byte("still here\n"))
	<-c.Started()
	c.Close(50 * time.Millisecond)
	<-log.closed
	if got := log.String(); got != "still here\n" {
		t.Errorf("log: %q", got)
	}
}

// QEMU writes the console a byte at a time. A steady stream of tiny
// writes must all reach the log, a file that costs a stat and a write each
// time: the writer takes them in batches, not a write each.
func TestByteAtATimeIsNotDropped(t *testing.T) {
	path := filepath.Join(t.TempDir(), "serial.log")
	c, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	const n = 300000
	b := []byte{'x'}
	for range n {
		if _, err := c.W.Write(b); err != nil {
			t.Fatal(err)
		}
	}
	c.CloseWriter()
	c.Close(time.Minute)
	got, _ := os.ReadFile(path)
	if c.Dropped() != 0 || strings.Count(string(got), "x") != n {
		t.Errorf("dropped %d of %d bytes written one at a time", c.Dropped(), n)
	}
}
