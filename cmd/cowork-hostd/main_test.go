package main

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/coworkhq/cowork/hostd/instance"
	"github.com/coworkhq/cowork/hostd/instance/instancetest"
	"github.com/coworkhq/cowork/internal/buildinfo"
	"github.com/coworkhq/cowork/internal/hostdwire"
)

func runMain(args ...string) (int, string, string) {
	var out, errOut bytes.Buffer
	code := Main(context.Background(), args, &out, &errOut)
	return code, out.String(), errOut.String()
}

// A command line from another build is a usage error (exit 2) that says
// so, never a daemon started with the wrong meaning.
func TestUsageErrors(t *testing.T) {
	for _, args := range [][]string{nil, {"hostd"}, {"inspect", "--bogus"}, {"inspect", "stray"}, {"version", "--json"}, {"run", "--name"}, {"disk"}, {"fetch", "--url", "u"}, {"verify", "stray"}} {
		code, out, errOut := runMain(args...)
		if code != hostdwire.ExitUsage || out != "" || errOut == "" {
			t.Errorf("%q: exit %d, stdout %q, stderr %q; want exit 2 and a message", args, code, out, errOut)
		}
	}
	if _, _, errOut := runMain("hostd"); !strings.Contains(errOut, "must come from the same build") {
		t.Errorf("an unknown command does not say what to do: %q", errOut)
	}
}

// inspect reports a file that is no disk as a fact the CLI words, with
// exit 0, and reads a real disk's format.
func TestInspect(t *testing.T) {
	dir := t.TempDir()
	notes := filepath.Join(dir, "notes.txt")
	os.WriteFile(notes, []byte("not a disk\n"), 0o600)
	disk := filepath.Join(dir, "disk.raw")
	b := make([]byte, 1<<20)
	b[510], b[511] = 0x55, 0xAA // an MBR
	os.WriteFile(disk, b, 0o600)

	code, out, errOut := runMain("inspect", "--image", notes)
	var got hostdwire.Inspection
	if code != 0 || json.Unmarshal([]byte(out), &got) != nil || got.Image == nil || !strings.Contains(got.Image.Err, "is not a disk image") || got.Kernel != nil {
		t.Fatalf("inspect a text file: exit %d %q %q -> %+v", code, out, errOut, got.Image)
	}
	code, out, _ = runMain("inspect", "--image", disk)
	got = hostdwire.Inspection{}
	if code != 0 || json.Unmarshal([]byte(out), &got) != nil || got.Image == nil || got.Image.Err != "" || got.Image.Format != "raw" {
		t.Fatalf("inspect a raw disk: exit %d %q -> %+v", code, out, got.Image)
	}
}

func TestVersion(t *testing.T) {
	code, out, _ := runMain("version")
	var v hostdwire.Version
	if code != 0 || json.Unmarshal([]byte(out), &v) != nil || v.Version != buildinfo.Version || v.Commit != buildinfo.Commit || v.Platform == "" {
		t.Fatalf("version: exit %d %q -> %+v", code, out, v)
	}
}

// A second hostd for an instance exits with the code that tells `cowork
// start` one already runs, and touches nothing of the first.
func TestRunForARunningInstance(t *testing.T) {
	p, _ := instancetest.New(t, instance.Config{})
	h := instancetest.Running(t, p, true)
	code, _, errOut := runMain("run", "--name", instance.DefaultName)
	if code != hostdwire.ExitAlreadyRunning || !strings.Contains(errOut, "instance sandbox already has a hostd") {
		t.Fatalf("exit %d: %s", code, errOut)
	}
	if !instance.Held(p) || len(h.Stops()) != 0 {
		t.Errorf("the running hostd was disturbed")
	}
}
