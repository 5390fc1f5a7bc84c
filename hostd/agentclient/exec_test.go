package agentclient_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/coworkhq/cowork/hostd/agentclient"
	"github.com/coworkhq/cowork/hostd/agentclient/agenttest"
)

func run(t *testing.T, c *agentclient.Client, o agentclient.ExecOptions) (agentclient.ExitStatus, string, string) {
	t.Helper()
	var out, errOut bytes.Buffer
	o.Stdout, o.Stderr = &out, &errOut
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	st, err := c.Exec(ctx, o)
	if err != nil {
		t.Fatalf("exec %q: %v", o.Argv, err)
	}
	return st, out.String(), errOut.String()
}

func TestExitCodes(t *testing.T) {
	a := agenttest.Start(t)
	c := a.Client(t)
	for _, code := range []int{0, 1, 7, 255} {
		st, _, _ := run(t, c, agentclient.ExecOptions{Argv: []string{"sh", "-c", "exit " + strconv.Itoa(code)}})
		if st.Code != code || st.Signal != "" {
			t.Errorf("exit %d: got %+v", code, st)
		}
	}
}

// The exec id the host picks marks the exec's processes (COWORK_EXEC),
// which the audit log's owners name; without one the agent picks its own.
func TestExecIDMarksTheProcesses(t *testing.T) {
	a := agenttest.Start(t)
	c := a.Client(t)
	id := agentclient.NewExecID()
	if _, out, _ := run(t, c, agentclient.ExecOptions{Argv: []string{"sh", "-c", "echo $COWORK_EXEC"}, ExecID: id}); out != id+"\n" {
		t.Errorf("COWORK_EXEC %q, want %q", out, id)
	}
	if _, out, _ := run(t, c, agentclient.ExecOptions{Argv: []string{"sh", "-c", "echo $COWORK_EXEC"}}); len(out) != 17 || out == id+"\n" {
		t.Errorf("without an id: COWORK_EXEC %q", out)
	}
	if NewID := agentclient.NewExecID(); NewID == id || len(NewID) != 16 {
		t.Errorf("ids %q, %q", id, NewID)
	}
}

func TestKilledBySignalReportedLikeAShell(t *testing.T) {
	a := agenttest.Start(t)
	st, _, _ := run(t, a.Client(t), agentclient.ExecOptions{Argv: []string{"sh", "-c", "kill -KILL $$"}})
	if st.Code != 128+9 || st.Signal != "SIGKILL" {
		t.Fatalf("got %+v, want code 137 and SIGKILL", st)
	}
}

func TestStdinReachesProcessAndCloseIsEOF(t *testing.T) {
	a := agenttest.Start(t)
	c := a.Client(t)
	st, out, _ := run(t, c, agentclient.ExecOptions{Argv: []string{"cat"}, Stdin: strings.NewReader("hello\nworld\n")})
	if st.Code != 0 || out != "hello\nworld\n" {
		t.Fatalf("cat: %+v %q", st, out)
	}
	// wc only prints once it sees EOF: close-stdin must arrive.
	st, out, _ = run(t, c, agentclient.ExecOptions{Argv: []string{"wc", "-c"}, Stdin: strings.NewReader("12345")})
	if st.Code != 0 || strings.TrimSpace(out) != "5" {
		t.Fatalf("wc -c: %+v %q", st, out)
	}
	// No stdin at all is an empty stdin, not a hang.
	st, out, _ = run(t, c, agentclient.ExecOptions{Argv: []string{"wc", "-c"}})
	if st.Code != 0 || strings.TrimSpace(out) != "0" {
		t.Fatalf("wc -c without stdin: %+v %q", st, out)
	}
}

func TestLargeStdoutAndStderrAtOnce(t *testing.T) {
	a := agenttest.Start(t)
	file := filepath.Join(t.TempDir(), "random")
	data := make([]byte, 64<<20)
	rand.Read(data)
	if err := os.WriteFile(file, data, 0o644); err != nil {
		t.Fatal(err)
	}
	want := sha256.Sum256(data)
	outH, errH := sha256.New(), sha256.New()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	st, err := a.Client(t).Exec(ctx, agentclient.ExecOptions{
		Argv:   []string{"sh", "-c", `cat "$1" & cat "$1" >&2; wait`, "sh", file},
		Stdout: outH, Stderr: errH,
	})
	if err != nil || st.Code != 0 {
		t.Fatalf("exec: %v %+v", err, st)
	}
	if !bytes.Equal(outH.Sum(nil), want[:]) || !bytes.Equal(errH.Sum(nil), want[:]) {
		t.Fatal("stdout or stderr differs from the 64 MiB file")
	}
}

// slowWriter stalls its first write until released, like a reader that
// stopped reading; the agent must stop reading the process meanwhile.
type slowWriter struct {
	release <-chan struct{}
	n       int64
}

func (w *slowWriter) Write(p []byte) (int, error) {
	<-w.release
	w.n += int64(len(p))
	return len(p), nil
}

func TestGiBOfOutputInBoundedMemory(t *testing.T) {
	if testing.Short() {
		t.Skip("streams 1 GiB")
	}
	a := agenttest.Start(t)
	release := make(chan struct{})
	w := &slowWriter{release: release}
	time.AfterFunc(2*time.Second, func() { close(release) })
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	st, err := a.Client(t).Exec(ctx, agentclient.ExecOptions{Argv: []string{"head", "-c", "1073741824", "/dev/zero"}, Stdout: w})
	if err != nil || st.Code != 0 {
		t.Fatalf("exec: %v %+v", err, st)
	}
	if w.n != 1<<30 {
		t.Fatalf("got %d bytes, want 1 GiB", w.n)
	}
	if peak := a.PeakRSS(t); peak > 100<<20 {
		t.Fatalf("agent peak RSS %d MiB while streaming 1 GiB to a stalled reader; want bounded (< 100 MiB)", peak>>20)
	}
}

// lineWatcher collects output and tells when a substring has appeared.
type lineWatcher struct {
	mu   sync.Mutex
	buf  bytes.Buffer
	seen chan struct{}
	want string
}

func (w *lineWatcher) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.buf.Write(p)
	if w.want != "" && strings.Contains(w.buf.String(), w.want) {
		w.want = ""
		close(w.seen)
	}
	return len(p), nil
}

func (w *lineWatcher) expect(s string) <-chan struct{} {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.want, w.seen = s, make(chan struct{})
	if strings.Contains(w.buf.String(), s) {
		w.want = ""
		close(w.seen)
	}
	return w.seen
}

func (w *lineWatcher) String() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.buf.String()
}

func TestPTYAndResize(t *testing.T) {
	a := agenttest.Start(t)
	stdinR, stdinW := io.Pipe()
	resize := make(chan agentclient.TerminalSize, 1)
	out := &lineWatcher{}
	first := out.expect("24 80")
	done := make(chan error, 1)
	var st agentclient.ExitStatus
	go func() {
		var err error
		st, err = a.Client(t).Exec(context.Background(), agentclient.ExecOptions{
			Argv:   []string{"sh", "-c", "tty; stty size; while read x; do stty size; done"},
			TTY:    &agentclient.TerminalSize{Rows: 24, Cols: 80},
			Stdin:  stdinR,
			Stdout: out,
			Resize: resize,
		})
		done <- err
	}()
	select {
	case <-first:
	case <-time.After(20 * time.Second):
		t.Fatalf("no initial size; output %q", out.String())
	}
	second := out.expect("50 132")
	resize <- agentclient.TerminalSize{Rows: 50, Cols: 132}
	// The resize and stdin travel apart: a line may be read before the
	// new size is set, so the guest is asked again until it shows.
	ask := time.NewTicker(50 * time.Millisecond)
	defer ask.Stop()
	deadline := time.After(20 * time.Second)
	for asked := false; !asked; {
		select {
		case <-second:
			asked = true
		case <-ask.C:
			stdinW.Write([]byte("\n"))
		case <-deadline:
			t.Fatalf("size did not follow the resize; output %q", out.String())
		}
	}
	stdinW.Close()
	if err := <-done; err != nil || st.Code != 0 {
		t.Fatalf("exec: %v %+v", err, st)
	}
	if !strings.Contains(out.String(), "/dev/pts/") {
		t.Fatalf("tty did not name a pty: %q", out.String())
	}
}

func TestRunsAsRequestedUser(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to switch users")
	}
	a := agenttest.Start(t)
	c := a.Client(t)
	_, out, _ := run(t, c, agentclient.ExecOptions{Argv: []string{"sh", "-c", "id -u; echo $HOME $USER $LOGNAME"}, User: "nobody", Dir: "/"})
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if len(lines) != 2 || lines[0] != "65534" || !strings.HasSuffix(lines[1], " nobody nobody") {
		t.Fatalf("as nobody: %q", out)
	}
	_, out, _ = run(t, c, agentclient.ExecOptions{Argv: []string{"id", "-u"}, User: "65534", Dir: "/"})
	if strings.TrimSpace(out) != "65534" {
		t.Fatalf("by uid: %q", out)
	}
}

func TestDefaultUserFlag(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to switch users")
	}
	a := agenttest.Start(t, "--default-user", "nobody")
	_, out, _ := run(t, a.Client(t), agentclient.ExecOptions{Argv: []string{"id", "-un"}, Dir: "/"})
	if strings.TrimSpace(out) != "nobody" {
		t.Fatalf("default user: %q", out)
	}
	info, err := a.RPC(t).Info(context.Background())
	if err != nil || info.DefaultUser != "nobody" {
		t.Fatalf("info: %v %v", info, err)
	}
}

func TestEnvAndCwd(t *testing.T) {
	a := agenttest.Start(t)
	dir := t.TempDir()
	_, out, _ := run(t, a.Client(t), agentclient.ExecOptions{
		Argv: []string{"sh", "-c", `echo "$FOO|$PATH"; pwd`},
		Env:  []string{"FOO=bar baz"},
		Dir:  dir,
	})
	want := "bar baz|/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin\n" + dir + "\n"
	if out != want {
		t.Fatalf("got %q, want %q", out, want)
	}
}

func TestSignalForwarded(t *testing.T) {
	a := agenttest.Start(t)
	sigs := make(chan syscall.Signal, 1)
	started := make(chan int, 1)
	go func() {
		<-started
		sigs <- syscall.SIGINT
	}()
	st, _, _ := run(t, a.Client(t), agentclient.ExecOptions{
		Argv:    []string{"sleep", "1000"},
		Signals: sigs,
		Started: func(pid int) { started <- pid },
	})
	if st.Code != 130 || st.Signal != "SIGINT" {
		t.Fatalf("got %+v, want 130 SIGINT", st)
	}
}

// gone waits until pid has exited (or is a zombie waiting for its reaper).
func gone(pid int, within time.Duration) bool {
	deadline := time.Now().Add(within)
	for time.Now().Before(deadline) {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
		if err != nil {
			return true
		}
		if i := bytes.LastIndexByte(b, ')'); i > 0 && len(b) > i+2 && b[i+2] == 'Z' {
			return true
		}
		time.Sleep(20 * time.Millisecond)
	}
	return false
}

func TestClientGoneKillsProcessTree(t *testing.T) {
	a := agenttest.Start(t, "--kill-grace", "300ms")
	c := a.Client(t)

	// A plain process dies of the SIGHUP. It has no stdin, so the client
	// half-closed its side at once: the agent must still notice it leave.
	ctx, cancel := context.WithCancel(context.Background())
	pids := make(chan int, 1)
	go c.Exec(ctx, agentclient.ExecOptions{Argv: []string{"sleep", "1000"}, Started: func(pid int) { pids <- pid }})
	pid := <-pids
	cancel()
	if !gone(pid, 5*time.Second) {
		t.Fatalf("sleep (pid %d) outlived its client", pid)
	}

	// A child that ignores SIGHUP is SIGKILLed after the grace period.
	ctx, cancel = context.WithCancel(context.Background())
	out := &lineWatcher{}
	seen := out.expect("\n")
	go c.Exec(ctx, agentclient.ExecOptions{Argv: []string{"sh", "-c", `trap "" HUP; sleep 1000 & echo $!; wait`}, Stdout: out})
	select {
	case <-seen:
	case <-time.After(10 * time.Second):
		t.Fatal("no pid printed")
	}
	child, err := strconv.Atoi(strings.TrimSpace(out.String()))
	if err != nil {
		t.Fatal(err)
	}
	cancel()
	if !gone(child, 5*time.Second) {
		syscall.Kill(child, syscall.SIGKILL)
		t.Fatalf("HUP-ignoring child (pid %d) outlived its client", child)
	}
}

func TestConcurrentExecsAreByteExact(t *testing.T) {
	a := agenttest.Start(t)
	c := a.Client(t)
	var wg sync.WaitGroup
	errs := make(chan error, 32)
	for i := range 32 {
		wg.Go(func() {
			in := make([]byte, 1<<20+i*4099)
			rand.Read(in)
			var out bytes.Buffer
			st, err := c.Exec(context.Background(), agentclient.ExecOptions{Argv: []string{"cat"}, Stdin: bytes.NewReader(in), Stdout: &out})
			switch {
			case err != nil:
				errs <- err
			case st.Code != 0:
				errs <- fmt.Errorf("exec %d: exit %+v", i, st)
			case !bytes.Equal(out.Bytes(), in):
				errs <- fmt.Errorf("exec %d: %d bytes back, %d sent, or different", i, out.Len(), len(in))
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}

func TestExecLogLine(t *testing.T) {
	a := agenttest.Start(t)
	run(t, a.Client(t), agentclient.ExecOptions{Argv: []string{"sh", "-c", "exit 3"}})
	deadline := time.Now().Add(5 * time.Second)
	for !strings.Contains(a.Log(), "argv0=sh") && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	var line string
	for _, l := range strings.Split(a.Log(), "\n") {
		if strings.Contains(l, "msg=exec ") {
			line = l
		}
	}
	for _, want := range []string{"user=", "argv0=sh", "exit=3", "duration="} {
		if !strings.Contains(line, want) {
			t.Errorf("exec log line %q lacks %q", line, want)
		}
	}
}

// A background process that keeps the output open must not keep the exec
// from ending, with pipes or with a terminal (which it may hold past the
// hang-up, ignoring SIGHUP).
func TestBackgroundChildDoesNotHoldTheExecOpen(t *testing.T) {
	a := agenttest.Start(t, "--kill-grace", "200ms")
	c := a.Client(t)
	for _, tty := range []*agentclient.TerminalSize{nil, {Rows: 24, Cols: 80}} {
		start := time.Now()
		st, out, _ := run(t, c, agentclient.ExecOptions{
			Argv: []string{"sh", "-c", `trap "" HUP; sleep 30 & echo $!; echo done`},
			TTY:  tty,
		})
		if st.Code != 0 || !strings.Contains(out, "done") {
			t.Fatalf("tty=%v: %+v %q", tty != nil, st, out)
		}
		if d := time.Since(start); d > 10*time.Second {
			t.Fatalf("tty=%v: exec took %v: the background child held it open", tty != nil, d)
		}
		pid, err := strconv.Atoi(strings.Fields(out)[0])
		if err != nil {
			t.Fatal(err)
		}
		// A finished exec leaves its background children be, like ssh.
		if gone(pid, time.Second) {
			t.Errorf("tty=%v: the background child was killed after a normal exit", tty != nil)
		}
		syscall.Kill(pid, syscall.SIGKILL)
	}
}

// trickleWriter takes its writes slowly, like a client on a loaded channel.
type trickleWriter struct {
	delay time.Duration
	n     int64
}

func (w *trickleWriter) Write(p []byte) (int, error) {
	time.Sleep(w.delay)
	w.n += int64(len(p))
	return len(p), nil
}

// What the process wrote before it exited all arrives, however long the
// client takes to read it: the pipes' last megabytes are not cut off (they
// once were, 250 ms after the exit, found by e2e/load_test.go).
func TestSlowClientGetsAllOutputAfterExit(t *testing.T) {
	a := agenttest.Start(t)
	// More than gRPC's flow-control windows hold (up to 16 MiB), read so
	// slowly that the pipe's last megabyte takes the client half a second.
	w := &trickleWriter{delay: 100 * time.Millisecond}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	const size = 24 << 20
	st, err := a.Client(t).Exec(ctx, agentclient.ExecOptions{Argv: []string{"head", "-c", strconv.Itoa(size), "/dev/zero"}, Stdout: w})
	if err != nil || st.Code != 0 {
		t.Fatalf("exec: %v %+v", err, st)
	}
	if w.n != size {
		t.Fatalf("got %d bytes of %d", w.n, size)
	}
}

// Stragglers that keep writing after the process exited get drainTimeout,
// not forever.
func TestFloodingBackgroundChildDoesNotHoldTheExecOpen(t *testing.T) {
	a := agenttest.Start(t, "--kill-grace", "200ms")
	start := time.Now()
	st, out, _ := run(t, a.Client(t), agentclient.ExecOptions{Argv: []string{"sh", "-c", `trap "" HUP; yes & echo $!`}})
	if st.Code != 0 {
		t.Fatalf("%+v", st)
	}
	if d := time.Since(start); d > 10*time.Second {
		t.Fatalf("exec took %v: a flooding background child held it open", d)
	}
	if pid, err := strconv.Atoi(strings.Fields(out)[0]); err == nil {
		syscall.Kill(pid, syscall.SIGKILL)
	}
}
