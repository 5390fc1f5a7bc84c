package hostd

import (
	"bytes"
	"errors"
	"fmt"
	stdlog "log"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/sirupsen/logrus"

	"github.com/coworkhq/cowork/hostd/instance"
)

// hostdLogChild is the hostd of TestHostdLogIsBounded: it floods its log
// every way hostd's can be (its logger, the standard log, logrus, raw
// stderr), then panics.
func hostdLogChild() {
	log, file := OpenLog("sandbox", os.Stderr)
	if file == nil {
		fmt.Println("hostd.log was not taken over")
		os.Exit(3)
	}
	chunk := bytes.Repeat([]byte("runtime: something printed straight to stderr\n"), 1400) // ~64 KiB
	for range 400 {                                                                        // ~25 MiB
		os.Stderr.Write(chunk)
		if err := file.Check(); err != nil {
			fmt.Println(err)
			os.Exit(3)
		}
	}
	for i := range 20000 {
		log.Warn("agent channel broke; reconnecting", "err", i)
		stdlog.Printf("http: TLS handshake error from 192.168.127.2:%d: EOF", i)
		logrus.Errorf("dhcp: unhandled message type: %d", i)
	}
	log.Info("last words before the panic")
	panic("hostd broke")
}

// hostd.log cannot grow without bound whatever floods it, and Go's panic
// report still lands in it.
func TestHostdLogIsBounded(t *testing.T) {
	if os.Getenv("HOSTD_LOG_CHILD") != "" {
		hostdLogChild()
		return
	}
	home := t.TempDir()
	t.Setenv("COWORK_HOME", home)
	paths, err := instance.PathsFor("sandbox")
	if err != nil {
		t.Fatal(err)
	}
	os.MkdirAll(paths.Dir(), 0o700)
	// As hostd.Launch opens it.
	f, err := os.OpenFile(paths.HostdLog(), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(os.Args[0], "-test.run=^TestHostdLogIsBounded$")
	cmd.Env = append(os.Environ(), "HOSTD_LOG_CHILD=1")
	cmd.Stdout, cmd.Stderr = f, f
	err = cmd.Run()
	f.Close()
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != 2 {
		t.Fatalf("the child did not panic: %v", err)
	}
	matches, _ := filepath.Glob(paths.HostdLog() + "*")
	var total int64
	for _, m := range matches {
		st, _ := os.Stat(m)
		if st.Size() > HostdLogMax+64<<10 {
			t.Errorf("%s holds %d bytes", filepath.Base(m), st.Size())
		}
		total += st.Size()
	}
	if len(matches) > HostdLogKeep+1 {
		t.Errorf("%d files: %v", len(matches), matches)
	}
	cur, _ := os.ReadFile(paths.HostdLog())
	if !bytes.Contains(cur, []byte("panic: hostd broke")) || !bytes.Contains(cur, []byte("last words before the panic")) {
		t.Errorf("the panic is not in hostd.log:\n%s", lastLines(cur, 10))
	}
	// The flood of messages was held back: the same lines, a few times.
	all := bytes.Join(func() (out [][]byte) {
		for _, m := range matches {
			b, _ := os.ReadFile(m)
			out = append(out, b)
		}
		return
	}(), nil)
	for _, msg := range []string{"agent channel broke", "http: TLS handshake error", "dhcp: unhandled message type"} {
		if n := bytes.Count(all, []byte(msg)); n == 0 || n > 40 {
			t.Errorf("%q logged %d times", msg, n)
		}
	}
}

func lastLines(b []byte, n int) string {
	lines := strings.Split(string(b), "\n")
	return strings.Join(lines[max(0, len(lines)-n):], "\n")
}
