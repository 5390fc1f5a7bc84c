package provision

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"
	"unicode/utf8"
)

// guest is a stand-in for the guest's files in a temporary directory, and
// for systemctl and journalctl.
type guest struct {
	t          *testing.T
	paths      Paths
	unitFailed bool
	journal    string // journalctl's output; empty: it logged nothing
	calls      [][]string
}

func newGuest(t *testing.T) *guest {
	dir := t.TempDir()
	return &guest{t: t, paths: Paths{
		Marker:          filepath.Join(dir, "provisioned"),
		BootFinished:    filepath.Join(dir, "boot-finished"),
		CloudInitStatus: filepath.Join(dir, "status.json"),
		CloudInitOutput: filepath.Join(dir, "cloud-init-output.log"),
		StepFile:        filepath.Join(dir, "provision-step"),
		Unit:            "cowork-provision.service",
	}}
}

func (g *guest) write(path, content string) {
	g.t.Helper()
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		g.t.Fatal(err)
	}
}

func (g *guest) run(_ context.Context, argv ...string) ([]byte, error) {
	g.calls = append(g.calls, argv)
	switch argv[0] {
	case "systemctl":
		if g.unitFailed {
			return nil, nil
		}
		return nil, errors.New("exit status 1")
	case "journalctl":
		return []byte(g.journal), nil
	}
	return nil, errors.New("unexpected command")
}

func (g *guest) read() Status {
	g.t.Helper()
	r := &Reader{Paths: g.paths, Run: g.run}
	return r.Read(context.Background())
}

func TestNothingYetIsRunning(t *testing.T) {
	g := newGuest(t)
	if got := g.read(); got != (Status{State: Running}) {
		t.Errorf("an empty guest: %+v", got)
	}
}

func TestRunningShowsStepStageAndLine(t *testing.T) {
	g := newGuest(t)
	g.write(g.paths.CloudInitStatus, "{\n \"v1\": {\n  \"datasource\": null,\n  \"init\": {\n   \"errors\": []\n  },\n  \"stage\": \"modules-config\"\n }\n}\n")
	g.write(g.paths.CloudInitOutput, "Cloud-init v. 22.4 running 'modules:config'\nGenerating locales...\n\n")
	want := Status{State: Running, Stage: "modules-config", LastLine: "Generating locales..."}
	if got := g.read(); got != want {
		t.Errorf("cloud-init's stage and output log: %+v, want %+v", got, want)
	}

	// The unit's journal is preferred to cloud-init's log once it logged.
	g.write(g.paths.StepFile, "installing packages\nignored\n")
	g.journal = "Unpacking tree (2.1.0-1) ...\n"
	want = Status{State: Running, Step: "installing packages", Stage: "modules-config", LastLine: "Unpacking tree (2.1.0-1) ..."}
	if got := g.read(); got != want {
		t.Errorf("the script's step: %+v, want %+v", got, want)
	}
	// The argv is fixed: no shell, no guest-supplied words.
	wantCalls := [][]string{
		{"systemctl", "is-failed", "--quiet", "cowork-provision.service"},
		{"journalctl", "--quiet", "--unit", "cowork-provision.service", "--boot", "--lines", "1", "--output", "cat", "--no-pager"},
	}
	if got := g.calls[len(g.calls)-2:]; !slices.EqualFunc(got, wantCalls, slices.Equal) {
		t.Errorf("commands run: %q, want %q", got, wantCalls)
	}
}

func TestStageNullOrBrokenJSONIsNoStage(t *testing.T) {
	g := newGuest(t)
	for _, status := range []string{
		`{"v1": {"stage": null}}`,
		`{"v1": {"stage": 3}}`,
		`{"v1": `,
		`"stage": "init"`, // the old sed probe's pattern, outside any JSON
	} {
		g.write(g.paths.CloudInitStatus, status)
		if got := g.read(); got.Stage != "" {
			t.Errorf("status.json %s: stage %q", status, got.Stage)
		}
	}
}

func TestFailedUnit(t *testing.T) {
	g := newGuest(t)
	g.unitFailed = true
	g.journal = "E: Unable to locate package nosuch\n"
	want := Status{State: Failed, LastLine: "E: Unable to locate package nosuch"}
	if got := g.read(); got != want {
		t.Errorf("a failed unit: %+v, want %+v", got, want)
	}
}

func TestFinishedWithoutMarker(t *testing.T) {
	g := newGuest(t)
	g.write(g.paths.BootFinished, "")
	g.unitFailed = true // finished wins, as the shell probe had it
	if got := g.read(); got.State != FinishedUnprovisioned {
		t.Errorf("boot-finished without the marker: %+v", got)
	}
}

// The marker wins over the terminal states: it is looked at last, so a
// guest that completed between the looks counts as provisioned.
func TestMarkerIsProvisioned(t *testing.T) {
	g := newGuest(t)
	g.write(g.paths.Marker, "")
	if got := g.read(); got.State != Provisioned {
		t.Errorf("the marker alone: %+v", got)
	}
	g.write(g.paths.BootFinished, "")
	g.unitFailed = true
	if got := g.read(); got.State != Provisioned {
		t.Errorf("the marker with boot-finished: %+v", got)
	}
	g.paths.Marker = "" // an agent told of no marker is never provisioned
	if got := g.read(); got.State == Provisioned {
		t.Errorf("no marker path: %+v", got)
	}
}

// Whatever the files hold, each string is one line of at most MaxText
// bytes, cut on a rune boundary.
func TestStringsAreBoundedSingleLines(t *testing.T) {
	g := newGuest(t)
	long := strings.Repeat("é", 10000)
	g.write(g.paths.StepFile, long+"\nsecond line")
	g.write(g.paths.CloudInitStatus, `{"v1": {"stage": "a\nb`+long+`"}}`)
	g.journal = "earlier\n" + long + "\n"
	got := g.read()
	for name, s := range map[string]string{"step": got.Step, "stage": got.Stage, "line": got.LastLine} {
		if len(s) > MaxText || strings.Contains(s, "\n") || !utf8.ValidString(s) {
			t.Errorf("%s: %d bytes %q...", name, len(s), s[:min(len(s), 20)])
		}
	}
	if got.Stage != "a" {
		t.Errorf("stage %q, want its first line", got.Stage)
	}
	if len(got.Step) != MaxText || len(got.LastLine) != MaxText {
		t.Errorf("step and line are %d and %d bytes, want %d", len(got.Step), len(got.LastLine), MaxText)
	}
}

// Bytes that are not UTF-8 (a Latin-1 log line) are replaced: a proto
// string must be valid UTF-8, or the agent could send nothing at all.
func TestInvalidUTF8IsReplaced(t *testing.T) {
	g := newGuest(t)
	g.write(g.paths.StepFile, "t\xe9l\xe9chargement\n")
	g.journal = "\xff\xfe done"
	got := g.read()
	if got.Step != "t\uFFFDl\uFFFDchargement" || !utf8.ValidString(got.LastLine) {
		t.Errorf("%+v", got)
	}
}

// A FIFO in place of the step file or the output log does not hang the
// look.
func TestFIFOsAreNotRead(t *testing.T) {
	g := newGuest(t)
	for _, p := range []string{g.paths.StepFile, g.paths.CloudInitOutput, g.paths.CloudInitStatus} {
		if err := syscall.Mkfifo(p, 0o600); err != nil {
			t.Skip("mkfifo:", err)
		}
	}
	read := make(chan Status, 1)
	go func() { read <- (&Reader{Paths: g.paths, Run: g.run}).Read(context.Background()) }()
	select {
	case got := <-read:
		if got != (Status{State: Running}) {
			t.Errorf("FIFOs: %+v", got)
		}
	case <-time.After(time.Minute):
		t.Fatal("the look hangs on a FIFO")
	}
}

// Only the tail of a long output log is read, and its last line shown.
func TestOutputLogTail(t *testing.T) {
	g := newGuest(t)
	g.write(g.paths.CloudInitOutput, strings.Repeat("old line\n", 1<<16)+"newest\n")
	if got := g.read(); got.LastLine != "newest" {
		t.Errorf("last line %q", got.LastLine)
	}
}

func TestRunCommandKeepsABoundedHead(t *testing.T) {
	if _, err := exec.LookPath("head"); err != nil {
		t.Skip("no head")
	}
	out, err := RunCommand(context.Background(), "head", "-c", "10000000", "/dev/zero")
	if err != nil || len(out) != maxCommandOutput {
		t.Errorf("kept %d bytes, %v; want %d", len(out), err, maxCommandOutput)
	}
	if _, err := RunCommand(context.Background(), "false"); err == nil {
		t.Error("a failing command reported no error")
	}
}

// The real paths are the ones the image's units and script use.
func TestDefaultPaths(t *testing.T) {
	p := DefaultPaths("/m")
	if p.Marker != "/m" || p.StepFile != "/run/cowork/provision-step" || p.Unit != "cowork-provision.service" ||
		p.BootFinished != "/var/lib/cloud/instance/boot-finished" || p.CloudInitStatus != "/run/cloud-init/status.json" {
		t.Errorf("%+v", p)
	}
}
