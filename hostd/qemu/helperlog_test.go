package qemu

import (
	"os"
	"os/exec"
	"path/filepath"
	"testing"
)

// What QEMU and virtiofsd print (the guest can provoke some of it) goes to
// a capped log: a helper that prints without end leaves at most
// (helperLogKeep+1)×helperLogMax bytes, and its last words are readable
// once it has been reaped.
func TestHelperLogIsBounded(t *testing.T) {
	path := filepath.Join(t.TempDir(), "qemu.log")
	log, err := helperLog(path)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("sh", "-c", "yes 'qemu-system-aarch64: warning: the guest did something odd' | head -c 20000000; echo; echo 'qemu: last words' >&2")
	cmd.Stdout, cmd.Stderr = log, log
	p, err := start(cmd, log)
	if err != nil {
		t.Fatal(err)
	}
	if err := <-p.exited; err != nil {
		t.Fatal(err)
	}
	var total int64
	matches, _ := filepath.Glob(path + "*")
	for _, m := range matches {
		st, _ := os.Stat(m)
		total += st.Size()
	}
	if len(matches) != helperLogKeep+1 || total > (helperLogKeep+1)*helperLogMax {
		t.Errorf("%d files, %d bytes", len(matches), total)
	}
	if got := tail(path, 1); got != "qemu: last words" {
		t.Errorf("the helper's last line: %q", got)
	}
}
