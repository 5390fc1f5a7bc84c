package vz

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/coworkhq/cowork/hostd/machine"
)

func TestCheckSaveMacOS(t *testing.T) {
	err := checkSaveMacOS("13.6.7")
	if err == nil || !strings.Contains(err.Error(), "this Mac (macOS 13.6.7) cannot save a VM; macOS 14 or newer can") {
		t.Errorf("macOS 13: %v", err)
	}
	for _, v := range []string{"14.0", "14.6.1", "15.5", "26.1"} {
		if err := checkSaveMacOS(v); err != nil {
			t.Errorf("macOS %s: %v", v, err)
		}
	}
	if err := checkSaveMacOS("x.1"); err == nil {
		t.Error("an unreadable version passed")
	}
}

func TestExplainSaveProbe(t *testing.T) {
	if explainSaveProbe(nil, false, "14.6") != nil {
		t.Error("no error, yet a refusal")
	}
	vzErr := errors.New("unsupported build target macOS version")
	if err := explainSaveProbe(vzErr, true, "14.6"); err == nil || !strings.Contains(err.Error(), "SDK older than 14") || !strings.Contains(err.Error(), "rebuild") {
		t.Errorf("old SDK: %v", err)
	}
	if err := explainSaveProbe(errors.New("unsupported macOS version"), false, "13.6"); err == nil || !strings.Contains(err.Error(), "macOS 14 or newer can") {
		t.Errorf("old macOS: %v", err)
	}
}

// The framework's verdict: yes; no without a reason; no because of the
// share (its own error, which DetachShare reports); no for another reason
// (Save's to report).
func TestCheckSavable(t *testing.T) {
	if err := checkSavable(true, nil, "15.5"); err != nil {
		t.Errorf("savable: %v", err)
	}
	err := checkSavable(false, nil, "14.6")
	if err == nil || !strings.Contains(err.Error(), "without saying why") || strings.Contains(err.Error(), "%!") {
		t.Errorf("false without an error: %v", err)
	}
	if shareRefusal(err) != nil {
		t.Error("DetachShare would report a refusal that is not the share's")
	}

	share := errors.New(`Error Domain=VZErrorDomain Code=2 "Invalid virtual machine configuration. Unsupported directory sharing device in configuration."`)
	err = checkSavable(false, share, "14.6")
	var limit *shareLimitError
	if !errors.As(err, &limit) || !strings.Contains(err.Error(), "macOS 14.6") || !strings.Contains(err.Error(), "cannot save a VM with a shared directory") ||
		!strings.Contains(err.Error(), "cowork stop") || !errors.Is(err, share) {
		t.Errorf("the share refused: %v", err)
	}
	if shareRefusal(err) != err {
		t.Error("DetachShare would not report the share's limit")
	}

	console := errors.New("Invalid virtual machine configuration. Unsupported console device in configuration.")
	err = checkSavable(false, console, "14.6")
	if err == nil || errors.As(err, &limit) || !strings.Contains(err.Error(), "Unsupported console device") {
		t.Errorf("another device refused: %v", err)
	}
	if shareRefusal(err) != nil || shareRefusal(nil) != nil {
		t.Error("DetachShare would report a refusal that is not the share's")
	}
}

// The saved file handed to the framework: regular, no symlink, of a size
// a guest of that memory can be saved in, saved with the same memory.
func TestCheckRestore(t *testing.T) {
	const memory = 256 << 20
	dir := t.TempDir()
	s := &machine.Saved{Dir: dir, Memory: memory, Files: []string{StateFile}}
	state := filepath.Join(dir, StateFile)
	write := func(size int64) {
		os.Remove(state)
		f, err := os.Create(state)
		if err != nil {
			t.Fatal(err)
		}
		f.Truncate(size) // sparse
		f.Close()
	}

	write(memory / 2)
	if path, err := checkRestore(s, memory); err != nil || path != state {
		t.Errorf("a good state: %q, %v", path, err)
	}
	if _, err := checkRestore(s, 2*memory); err == nil || !strings.Contains(err.Error(), "had 256 MiB of memory, this VM 512 MiB") {
		t.Errorf("other memory: %v", err)
	}

	for _, c := range []struct {
		name  string
		setup func()
		want  string
	}{
		{"missing", func() { os.Remove(state) }, "no such file"},
		{"empty", func() { write(0) }, "is 0 bytes"},
		{"too big", func() { write(memory + maxStateOverhead + 1) }, "not a guest this VM saved"},
		{"a directory", func() { os.Remove(state); os.Mkdir(state, 0o700) }, "not a regular file"},
		{"a symlink", func() {
			os.RemoveAll(state)
			target := filepath.Join(t.TempDir(), "elsewhere")
			os.WriteFile(target, []byte("a state"), 0o600)
			os.Symlink(target, state)
		}, "not a regular file"},
	} {
		c.setup()
		if _, err := checkRestore(s, memory); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: %v, want %q", c.name, err, c.want)
		}
	}
}

// Save never writes over a file, nor through a dangling symlink, since it
// removes the file when the save fails.
func TestCheckNoState(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, StateFile)
	if err := checkNoState(path); err != nil {
		t.Errorf("no file: %v", err)
	}
	os.Symlink(filepath.Join(dir, "nowhere"), path)
	if err := checkNoState(path); !errors.Is(err, os.ErrExist) {
		t.Errorf("a dangling symlink: %v", err)
	}
	os.Remove(path)
	os.WriteFile(path, []byte("x"), 0o600)
	if err := checkNoState(path); !errors.Is(err, os.ErrExist) {
		t.Errorf("a file: %v", err)
	}
}

func TestSyncSaved(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, StateFile)
	os.WriteFile(path, []byte("state"), 0o600)
	if err := syncSaved(path); err != nil {
		t.Errorf("a regular file: %v", err)
	}
	link := filepath.Join(dir, "link")
	os.Symlink(path, link)
	if err := syncSaved(link); err == nil {
		t.Error("flushed through a symlink")
	}
	if err := syncSaved(filepath.Join(dir, "none")); err == nil {
		t.Error("flushed a missing file")
	}
}
