package rotlog

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// files returns the log's files, the oldest first, and fails on a file
// past Keep or one over MaxSize.
func files(t *testing.T, path string, o Options) [][]byte {
	t.Helper()
	if _, err := os.Stat(fmt.Sprintf("%s.%d", path, o.Keep+1)); err == nil {
		t.Errorf("%s.%d exists: more than Keep=%d rotated files", path, o.Keep+1, o.Keep)
	}
	var out [][]byte
	for i := o.Keep; i >= 0; i-- {
		p := path
		if i > 0 {
			p = fmt.Sprintf("%s.%d", path, i)
		}
		b, err := os.ReadFile(p)
		if err != nil {
			continue
		}
		if int64(len(b)) > o.MaxSize {
			t.Errorf("%s holds %d bytes, over MaxSize %d", filepath.Base(p), len(b), o.MaxSize)
		}
		out = append(out, b)
	}
	return out
}

// A log fed far more than its bound keeps at most (Keep+1)×MaxSize bytes:
// the newest ones, in order, with lines whole.
func TestLogStaysWithinItsBound(t *testing.T) {
	path := filepath.Join(t.TempDir(), "serial.log")
	o := Options{MaxSize: 4096, Keep: 2}
	l, err := Open(path, o)
	if err != nil {
		t.Fatal(err)
	}
	var all bytes.Buffer
	for i := range 5000 { // ~250 KiB, 60 times the bound
		line := fmt.Sprintf("line %d %s\n", i, strings.Repeat("x", i%97))
		all.WriteString(line)
		if n, err := l.Write([]byte(line)); err != nil || n != len(line) {
			t.Fatalf("write: %d, %v", n, err)
		}
	}
	l.Close()
	got := bytes.Join(files(t, path, o), nil)
	if int64(len(got)) > int64(o.Keep+1)*o.MaxSize || len(got) < int(o.MaxSize) {
		t.Errorf("kept %d bytes; want at most %d", len(got), int64(o.Keep+1)*o.MaxSize)
	}
	if !bytes.HasSuffix(all.Bytes(), got) {
		t.Error("the kept files are not the end of what was written, in order")
	}
	for _, f := range files(t, path, o) {
		if len(f) > 0 && (!bytes.HasPrefix(f, []byte("line ")) || !bytes.HasSuffix(f, []byte("\n"))) {
			t.Errorf("a line was split across files: %.30q…%q", f, f[max(0, len(f)-20):])
		}
	}
	if _, err := l.Write([]byte("x")); !errors.Is(err, os.ErrClosed) {
		t.Errorf("write after Close: %v", err)
	}
}

// One write longer than MaxSize is split over files, none over the bound.
func TestAWriteLargerThanTheBoundIsSplit(t *testing.T) {
	path := filepath.Join(t.TempDir(), "log")
	o := Options{MaxSize: 1000, Keep: 3}
	l, err := Open(path, o)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	big := bytes.Repeat([]byte("0123456789"), 350)
	if n, err := l.Write(big); err != nil || n != len(big) {
		t.Fatalf("write: %d, %v", n, err)
	}
	got := files(t, path, o)
	if len(got) != 4 || !bytes.Equal(bytes.Join(got, nil), big) {
		t.Errorf("got %d files holding %d bytes", len(got), len(bytes.Join(got, nil)))
	}
}

// Fresh gives each run a file of its own; the last run's is path.1.
func TestFreshStartsANewFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "serial.log")
	os.WriteFile(path, []byte("last boot\n"), 0o600)
	l, err := Open(path, Options{MaxSize: 1 << 20, Keep: 2, Fresh: true})
	if err != nil {
		t.Fatal(err)
	}
	l.Write([]byte("this boot\n"))
	l.Close()
	if b, _ := os.ReadFile(path + ".1"); string(b) != "last boot\n" {
		t.Errorf("path.1: %q", b)
	}
	if b, _ := os.ReadFile(path); string(b) != "this boot\n" {
		t.Errorf("path: %q", b)
	}
	// Not fresh: appended.
	l, _ = Open(path, Options{MaxSize: 1 << 20, Keep: 2})
	l.Write([]byte("more\n"))
	l.Close()
	if b, _ := os.ReadFile(path); string(b) != "this boot\nmore\n" {
		t.Errorf("appended: %q", b)
	}
}

// Writes through another descriptor of the file (a process's stderr) count
// toward its size: the next Write, or Check, rotates.
func TestOtherWritersCount(t *testing.T) {
	path := filepath.Join(t.TempDir(), "hostd.log")
	o := Options{MaxSize: 1000, Keep: 1}
	var opened []*os.File
	o.OnOpen = func(f *os.File) error { opened = append(opened, f); return nil }
	l, err := Open(path, o)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	other, _ := os.OpenFile(path, os.O_WRONLY|os.O_APPEND, 0)
	other.Write(bytes.Repeat([]byte("s"), 2500))
	other.Close()
	if err := l.Check(); err != nil {
		t.Fatal(err)
	}
	if st, _ := os.Stat(path); st.Size() != 0 {
		t.Errorf("Check left %d bytes in the file", st.Size())
	}
	if len(opened) != 2 {
		t.Errorf("OnOpen called %d times, want 2 (open, rotation)", len(opened))
	}
	other, _ = os.OpenFile(path, os.O_WRONLY|os.O_APPEND, 0)
	other.Write(bytes.Repeat([]byte("s"), 990))
	other.Close()
	l.Write([]byte("0123456789abcdef\n"))
	if b, _ := os.ReadFile(path); string(b) != "0123456789abcdef\n" {
		t.Errorf("Write did not count the other writer's bytes: %d bytes in the file", len(b))
	}
	// Under the bound, Check leaves the file alone.
	if err := l.Check(); err != nil || len(opened) != 3 {
		t.Errorf("Check under the bound: %v, %d opens", err, len(opened))
	}
}

// When the file cannot be moved aside, it is emptied: the bound holds.
func TestRotationThatCannotRenameTruncates(t *testing.T) {
	path := filepath.Join(t.TempDir(), "log")
	os.MkdirAll(filepath.Join(path+".1", "blocker"), 0o700) // a non-empty directory in the way
	o := Options{MaxSize: 100, Keep: 1}
	l, err := Open(path, o)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	for range 50 {
		if _, err := l.Write([]byte("0123456789\n")); err != nil {
			t.Fatal(err)
		}
	}
	if st, _ := os.Stat(path); st.Size() > o.MaxSize {
		t.Errorf("the file grew to %d bytes", st.Size())
	}
}

func TestOnOpenErrorFails(t *testing.T) {
	boom := errors.New("boom")
	_, err := Open(filepath.Join(t.TempDir(), "log"), Options{MaxSize: 10, OnOpen: func(*os.File) error { return boom }})
	if !errors.Is(err, boom) {
		t.Errorf("Open: %v", err)
	}
	if _, err := Open(filepath.Join(t.TempDir(), "log"), Options{}); err == nil {
		t.Error("Open without a MaxSize")
	}
}

// Go writes a panic to descriptor 2. A log that took over stdout and
// stderr (OntoStdio) gets it in its current file, after rotations too.
func TestPanicLandsInTheCurrentFile(t *testing.T) {
	if path := os.Getenv("ROTLOG_PANIC_CHILD"); path != "" {
		if !IsStderr(path) {
			fmt.Println("stderr is not the log")
			os.Exit(3)
		}
		l, err := Open(path, Options{MaxSize: 1000, Keep: 1, OnOpen: OntoStdio})
		if err != nil {
			fmt.Println(err)
			os.Exit(3)
		}
		for i := range 100 {
			fmt.Fprintf(l, "log line %d\n", i)
		}
		panic("the daemon broke")
	}
	path := filepath.Join(t.TempDir(), "hostd.log")
	f, err := os.OpenFile(path, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(os.Args[0], "-test.run=^TestPanicLandsInTheCurrentFile$")
	cmd.Env = append(os.Environ(), "ROTLOG_PANIC_CHILD="+path)
	cmd.Stdout, cmd.Stderr = f, f // as hostd.Launch does
	err = cmd.Run()
	f.Close()
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != 2 {
		t.Fatalf("the child did not panic: %v", err)
	}
	cur, _ := os.ReadFile(path)
	if !bytes.Contains(cur, []byte("panic: the daemon broke")) || !bytes.Contains(cur, []byte("goroutine ")) {
		t.Errorf("the panic is not in the current file:\n%s", cur)
	}
	if !bytes.HasPrefix(cur, []byte("log line ")) {
		t.Errorf("the current file does not start with the log's own lines:\n%.200s", cur)
	}
	if old, _ := os.ReadFile(path + ".1"); !bytes.HasPrefix(old, []byte("log line ")) || len(old) > 1000 {
		t.Errorf("path.1 is not a rotated part of the log: %d bytes", len(old))
	}
}

// A log reopened where an earlier run left a file counts that file's bytes
// toward the bound, without OnOpen too.
func TestReopenedLogCountsWhatIsThere(t *testing.T) {
	path := filepath.Join(t.TempDir(), "network.jsonl")
	o := Options{MaxSize: 1000, Keep: 1}
	if err := os.WriteFile(path, bytes.Repeat([]byte("s"), 990), 0o600); err != nil {
		t.Fatal(err)
	}
	l, err := Open(path, o)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	if b, _ := os.ReadFile(path); len(b) != 990 {
		t.Fatalf("Open changed the file under the bound: %d bytes", len(b))
	}
	l.Write([]byte("0123456789abcdef\n"))
	if b, _ := os.ReadFile(path); string(b) != "0123456789abcdef\n" {
		t.Errorf("Write did not count the bytes already there: %d bytes in the file", len(b))
	}
	l.Write([]byte("more\n"))
	if b, _ := os.ReadFile(path); string(b) != "0123456789abcdef\nmore\n" {
		t.Errorf("Write did not count its own bytes after a rotation: %q", b)
	}
}

// StartsFile tells a write that begins a file (an empty one, or one that
// rotates) from one that goes on the current file, as Write then does.
func TestStartsFileAgreesWithWrite(t *testing.T) {
	path := filepath.Join(t.TempDir(), "network.jsonl")
	l, err := Open(path, Options{MaxSize: 20, Keep: 2})
	if err != nil {
		t.Fatal(err)
	}
	for i, c := range []struct {
		line  string
		first bool
	}{{"0123456789\n", true}, {"abcdefgh\n", false}, {"x\n", true}, {"0123456789abcdefg\n", false}, {"y\n", true}} {
		got, err := l.StartsFile(len(c.line))
		if err != nil || got != c.first {
			t.Fatalf("write %d (%q): StartsFile %v %v, want %v", i, c.line, got, err, c.first)
		}
		l.Write([]byte(c.line))
		if b, _ := os.ReadFile(path); c.first != strings.HasPrefix(string(b), c.line) {
			t.Fatalf("write %d (%q): the file holds %q", i, c.line, b)
		}
	}
	l.Close()
	if _, err := l.StartsFile(1); !errors.Is(err, os.ErrClosed) {
		t.Fatalf("StartsFile after Close: %v", err)
	}
}

// With SyncRotated, the files a rotation moves aside stay open until the
// next Sync commits them (at most Keep of them: an older one is gone from
// the disk); Sync closes them. Size is the current file's.
func TestSyncCommitsTheRotatedFiles(t *testing.T) {
	path := filepath.Join(t.TempDir(), "network.jsonl")
	o := Options{MaxSize: 100, Keep: 2, SyncRotated: true}
	l, err := Open(path, o)
	if err != nil {
		t.Fatal(err)
	}
	line := []byte(strings.Repeat("x", 59) + "\n")
	for i := range 6 { // a rotation at each write after the first
		l.Write(line)
		if want := min(i, o.Keep); len(l.rotated) != want {
			t.Fatalf("write %d: %d rotated files open, want %d", i, len(l.rotated), want)
		}
	}
	if n, err := l.Size(); n != 60 || err != nil {
		t.Fatalf("Size %d %v", n, err)
	}
	kept := l.rotated
	if err := l.Sync(); err != nil || len(l.rotated) != 0 {
		t.Fatalf("Sync: %v, %d rotated files left", err, len(l.rotated))
	}
	for _, f := range kept {
		if _, err := f.Stat(); !errors.Is(err, os.ErrClosed) {
			t.Fatalf("%s left open by Sync: %v", f.Name(), err)
		}
	}
	l.Close()
	if err := l.Sync(); !errors.Is(err, os.ErrClosed) {
		t.Fatalf("Sync after Close: %v", err)
	}
	// Without SyncRotated a rotation closes the file at once.
	l, _ = Open(path, Options{MaxSize: 100, Keep: 2})
	l.Write(line)
	l.Write(line)
	if len(l.rotated) != 0 || l.Sync() != nil {
		t.Fatal("files kept open without SyncRotated")
	}
	l.Close()
}

// A log with a rotation lock rotates only while it holds the lock alone:
// a reader holding it shared keeps the files still, and the lock is free
// again once the rotation is done.
func TestRotationWaitsForTheLock(t *testing.T) {
	dir := t.TempDir()
	path, lockPath := filepath.Join(dir, "network.jsonl"), filepath.Join(dir, "network.jsonl.rotating")
	l, err := Open(path, Options{MaxSize: 64, Keep: 2, RotationLock: lockPath})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	line := []byte(strings.Repeat("x", 40) + "\n")
	if _, err := l.Write(line); err != nil {
		t.Fatal(err)
	}
	reader, err := os.Open(lockPath)
	if err != nil {
		t.Fatalf("no rotation lock made at Open: %v", err)
	}
	defer reader.Close()
	if err := syscall.Flock(int(reader.Fd()), syscall.LOCK_SH); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { _, err := l.Write(line); done <- err }() // rotates
	select {
	case err := <-done:
		t.Fatalf("rotated under a reader's shared lock: %v", err)
	case <-time.After(200 * time.Millisecond):
	}
	if _, err := os.Stat(path + ".1"); err == nil {
		t.Fatal("a file moved while a reader held the lock")
	}
	syscall.Flock(int(reader.Fd()), syscall.LOCK_UN)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(path + ".1"); err != nil {
		t.Fatalf("no rotation once the lock was free: %v", err)
	}
	if err := syscall.Flock(int(reader.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		t.Fatalf("the writer kept the lock after its rotation: %v", err)
	}
}

// A rotation that cannot open its next file (the folder gone, a full
// disk) fails that write, and the log opens the file again at the next
// once it can: it is not left closed for good. A closed log stays closed.
func TestALogComesBackAfterAFailedRotation(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "logs")
	os.Mkdir(dir, 0o700)
	path := filepath.Join(dir, "log")
	l, err := Open(path, Options{MaxSize: 10, Keep: 1})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := l.Write([]byte("12345678\n")); err != nil {
		t.Fatal(err)
	}
	os.RemoveAll(dir)
	if _, err := l.Write([]byte("abcdefgh\n")); err == nil { // rotates into a folder that is gone
		t.Fatal("a rotation into a removed folder succeeded")
	}
	if _, err := l.Write([]byte("still\n")); err == nil {
		t.Fatal("a write with the folder still gone succeeded")
	}
	os.Mkdir(dir, 0o700)
	if _, err := l.Write([]byte("back\n")); err != nil {
		t.Fatalf("a write once the folder is back: %v", err)
	}
	if ok, err := l.StartsFile(1); err != nil || ok {
		t.Errorf("StartsFile after the reopen: %v, %v", ok, err)
	}
	if b, _ := os.ReadFile(path); string(b) != "back\n" {
		t.Errorf("the reopened file holds %q", b)
	}
	l.Close()
	if _, err := l.Write([]byte("x\n")); !errors.Is(err, os.ErrClosed) {
		t.Errorf("a write after Close: %v", err)
	}
	if err := l.Sync(); !errors.Is(err, os.ErrClosed) {
		t.Errorf("a sync after Close: %v", err)
	}
}
