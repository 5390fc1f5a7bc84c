package acceptloop

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// fakeListener fails Accept with the errors queued, then hands out the
// connections queued, then reports itself closed.
type fakeListener struct {
	mu    sync.Mutex
	errs  []error
	conns []net.Conn
}

func (l *fakeListener) Accept() (net.Conn, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(l.errs) > 0 {
		err := l.errs[0]
		l.errs = l.errs[1:]
		return nil, err
	}
	if len(l.conns) > 0 {
		c := l.conns[0]
		l.conns = l.conns[1:]
		return c, nil
	}
	return nil, net.ErrClosed
}
func (l *fakeListener) Close() error   { return nil }
func (l *fakeListener) Addr() net.Addr { return &net.UnixAddr{Name: "fake", Net: "unix"} }

func acceptErr(errno syscall.Errno) error {
	return &net.OpError{Op: "accept", Net: "unix", Err: os.NewSyscallError("accept4", errno)}
}

func TestServeOutlastsRunningOutOfDescriptors(t *testing.T) {
	a, b := net.Pipe()
	defer b.Close()
	l := &fakeListener{conns: []net.Conn{a}}
	for range 12 {
		l.errs = append(l.errs, acceptErr(syscall.EMFILE))
	}
	l.errs = append(l.errs, acceptErr(syscall.ENFILE), acceptErr(syscall.ENOBUFS))
	var slept []time.Duration
	var reports []string
	served := make(chan net.Conn, 1)
	err := serve(l, func(c net.Conn) { served <- c }, func(err error, n int) {
		reports = append(reports, fmt.Sprint(err, n))
	}, func(d time.Duration) { slept = append(slept, d) })
	if err != nil {
		t.Fatalf("serve ended with %v, want nil once the listener closed", err)
	}
	select {
	case c := <-served:
		if c != a {
			t.Fatal("served another connection")
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the connection after the failures was never served")
	}
	if len(slept) != 14 || slept[0] != minDelay || slept[1] != 2*minDelay || slept[13] != maxDelay {
		t.Errorf("backoff %v: want %v doubling to %v", slept, minDelay, maxDelay)
	}
	if len(reports) != 2 || !strings.Contains(reports[0], "too many open files") || reports[1] != "<nil> 14" {
		t.Errorf("reports %q: want the first failure, then recovery after 14", reports)
	}
}

func TestServeStopsOnAPermanentError(t *testing.T) {
	bad := acceptErr(syscall.EINVAL)
	l := &fakeListener{errs: []error{bad}}
	if err := serve(l, func(net.Conn) { t.Error("served") }, nil, func(time.Duration) { t.Error("retried") }); !errors.Is(err, syscall.EINVAL) {
		t.Fatalf("got %v, want EINVAL", err)
	}
}

func TestTemporary(t *testing.T) {
	for _, e := range []syscall.Errno{syscall.EMFILE, syscall.ENFILE, syscall.ENOBUFS, syscall.ENOMEM, syscall.ECONNABORTED} {
		if !Temporary(acceptErr(e)) {
			t.Errorf("%v: not temporary", e)
		}
	}
	for _, err := range []error{acceptErr(syscall.EINVAL), acceptErr(syscall.EBADF), net.ErrClosed, io.EOF} {
		if Temporary(err) {
			t.Errorf("%v: temporary", err)
		}
	}
}

// The real thing: a process with a small RLIMIT_NOFILE fills its table,
// a client connects (the kernel queues it; accept fails with EMFILE), the
// process frees descriptors, and the same loop serves the client.
func TestServeRecoversFromARealEMFILE(t *testing.T) {
	if os.Getenv("ACCEPTLOOP_CHILD") == "1" {
		t.Skip("the child runs TestChildRunningOutOfDescriptors")
	}
	cmd := exec.Command(os.Args[0], "-test.run=^TestChildRunningOutOfDescriptors$", "-test.v")
	cmd.Env = append(os.Environ(), "ACCEPTLOOP_CHILD=1")
	stdin, _ := cmd.StdinPipe()
	stdout, _ := cmd.StdoutPipe()
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer cmd.Process.Kill()
	lines := make(chan string, 100)
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			lines <- sc.Text()
		}
		close(lines)
	}()
	// The child's lines come in any order (its first Accept may fail
	// before it says it is listening: Linux takes the descriptor before it
	// looks for a connection), so each is looked for in all said so far.
	var said []string
	expect := func(prefix string) string {
		t.Helper()
		deadline := time.After(60 * time.Second)
		for i := 0; ; i++ {
			for i >= len(said) {
				select {
				case l, ok := <-lines:
					if !ok {
						t.Fatalf("the child ended before saying %q; it said %q", prefix, said)
					}
					said = append(said, l)
				case <-deadline:
					t.Fatalf("the child did not say %q in time; it said %q", prefix, said)
				}
			}
			if rest, found := strings.CutPrefix(said[i], prefix); found {
				return rest
			}
		}
	}
	addr := expect("listening ")
	expect("full")
	c, err := net.DialTimeout("tcp", addr, 30*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if got := expect("accept failed: "); !strings.Contains(got, "too many open files") {
		t.Fatalf("accept failed with %q, want EMFILE", got)
	}
	fmt.Fprintln(stdin, "release")
	c.SetReadDeadline(time.Now().Add(60 * time.Second))
	got, err := bufio.NewReader(c).ReadString('\n')
	if err != nil || got != "served\n" {
		t.Fatalf("after the descriptors came back: %q %v; the loop stopped serving", got, err)
	}
	expect("accepting again after ")
	stdin.Close()
	if err := cmd.Wait(); err != nil {
		t.Fatalf("child: %v", err)
	}
}

func TestChildRunningOutOfDescriptors(t *testing.T) {
	if os.Getenv("ACCEPTLOOP_CHILD") != "1" {
		t.Skip("run by TestServeRecoversFromARealEMFILE")
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var out sync.Mutex
	say := func(format string, args ...any) {
		out.Lock()
		defer out.Unlock()
		fmt.Printf(format+"\n", args...)
	}
	lim := syscall.Rlimit{Cur: 64, Max: 64}
	if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		t.Fatal(err)
	}
	var hoard []*os.File
	for {
		f, err := os.Open(os.DevNull)
		if err != nil {
			if !errors.Is(err, syscall.EMFILE) {
				t.Fatal(err)
			}
			break
		}
		hoard = append(hoard, f)
	}
	go Serve(l, func(c net.Conn) {
		io.WriteString(c, "served\n")
		c.Close()
	}, func(err error, n int) {
		if err != nil {
			say("accept failed: %v", err)
		} else {
			say("accepting again after %d failures", n)
		}
	})
	say("listening %s", l.Addr())
	say("full")
	sc := bufio.NewScanner(os.Stdin)
	for sc.Scan() {
		if sc.Text() == "release" {
			for _, f := range hoard {
				f.Close()
			}
			hoard = nil
		}
	}
}
