// Package provision reads, inside the guest, how its first-boot
// provisioning is going: whether the provisioning marker exists, whether
// cloud-init finished or the provisioning unit failed, the step the
// provisioning script is at, cloud-init's stage and the last line of
// output. The agent reports what it reads to the host (agentpb's
// Provisioning call), so that all knowledge of cloud-init's files and of
// the provisioning unit lives in the guest, next to them, and hostd
// parses no guest files.
//
// It runs no shell: files are read with bounded reads, cloud-init's
// status with encoding/json, and systemctl and journalctl are run with
// fixed arguments.
package provision

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"time"
	"unicode/utf8"

	"github.com/coworkhq/cowork/internal/agentwire"
)

// State is where provisioning stands.
type State int

const (
	// Running: neither provisioned nor ended.
	Running State = iota
	// Provisioned: the marker exists.
	Provisioned
	// Failed: the provisioning unit failed.
	Failed
	// FinishedUnprovisioned: cloud-init finished and the marker does not
	// exist, so provisioning ended without completing.
	FinishedUnprovisioned
)

func (s State) String() string {
	switch s {
	case Running:
		return "running"
	case Provisioned:
		return "provisioned"
	case Failed:
		return "failed"
	case FinishedUnprovisioned:
		return "finished unprovisioned"
	}
	return "unknown"
}

// Status is one look at provisioning. Its strings are single lines of at
// most MaxText bytes.
type Status struct {
	State State
	// Step is the first line of the provisioning script's step file.
	Step string
	// Stage is cloud-init's stage running now, or empty.
	Stage string
	// LastLine is the provisioning unit's last line of output this boot,
	// or else the last line of cloud-init's output log.
	LastLine string
}

// MaxText bounds each string of a Status.
const MaxText = 512

// Paths are the files the Reader looks at. Tests point them into a
// temporary directory.
type Paths struct {
	// Marker exists once the guest is provisioned (the provisioning
	// script makes it last).
	Marker string
	// BootFinished is written by cloud-init's final stage; the
	// provisioning unit runs before that stage, so once it exists
	// provisioning has ended, one way or the other.
	BootFinished string
	// CloudInitStatus is cloud-init's status.json, which names the stage
	// it runs.
	CloudInitStatus string
	// CloudInitOutput is cloud-init's output log, the last line shown
	// when the unit logged nothing yet.
	CloudInitOutput string
	// StepFile is where the provisioning script writes its step.
	StepFile string
	// Unit is the provisioning unit's systemd name.
	Unit string
}

// DefaultPaths are the guest's real files, with marker as the
// provisioning marker (the agent's --provisioned-marker; empty means the
// guest never counts as provisioned).
func DefaultPaths(marker string) Paths {
	return Paths{
		Marker:          marker,
		BootFinished:    "/var/lib/cloud/instance/boot-finished",
		CloudInitStatus: "/run/cloud-init/status.json",
		CloudInitOutput: "/var/log/cloud-init-output.log",
		StepFile:        agentwire.ProvisionStepFile,
		Unit:            agentwire.ProvisionUnit,
	}
}

// Runner runs argv (no shell) and returns its standard output, of which
// it keeps a bounded head; err is non-nil when it could not run or exited
// with a status other than 0.
type Runner func(ctx context.Context, argv ...string) ([]byte, error)

// Reader reads the provisioning status.
type Reader struct {
	Paths Paths
	// Run runs systemctl and journalctl; nil means RunCommand.
	Run Runner
}

// commandTimeout bounds each systemctl or journalctl run: a look that
// hangs must not hold the report back for good.
const commandTimeout = 10 * time.Second

// Read looks at the guest once. The terminal states are read before the
// marker: the script makes the marker before its unit ends and cloud-init
// finishes after that, so a marker made between the two looks is seen,
// and a guest that just completed is never reported as having failed.
func (r *Reader) Read(ctx context.Context) Status {
	var st Status
	switch {
	case exists(r.Paths.BootFinished):
		st.State = FinishedUnprovisioned
	case r.unitFailed(ctx):
		st.State = Failed
	}
	if exists(r.Paths.Marker) {
		st.State = Provisioned
	}
	st.Step = oneLine(string(headOf(r.Paths.StepFile, 4<<10)))
	st.Stage = oneLine(cloudInitStage(r.Paths.CloudInitStatus))
	line := lastLine(r.journalTail(ctx))
	if line == "" {
		line = lastLine(tailOf(r.Paths.CloudInitOutput, 8<<10))
	}
	st.LastLine = oneLine(line)
	return st
}

// unitFailed is what `systemctl is-failed --quiet UNIT` says: status 0
// means failed. A systemctl that cannot run says nothing failed.
func (r *Reader) unitFailed(ctx context.Context) bool {
	ctx, cancel := context.WithTimeout(ctx, commandTimeout)
	defer cancel()
	_, err := r.run()(ctx, "systemctl", "is-failed", "--quiet", r.Paths.Unit)
	return err == nil
}

// journalTail is the unit's last message this boot.
func (r *Reader) journalTail(ctx context.Context) []byte {
	ctx, cancel := context.WithTimeout(ctx, commandTimeout)
	defer cancel()
	out, err := r.run()(ctx, "journalctl", "--quiet", "--unit", r.Paths.Unit, "--boot", "--lines", "1", "--output", "cat", "--no-pager")
	if err != nil {
		return nil
	}
	return out
}

func (r *Reader) run() Runner {
	if r.Run != nil {
		return r.Run
	}
	return RunCommand
}

// maxCommandOutput is how much of a command's output RunCommand keeps.
const maxCommandOutput = 64 << 10

// RunCommand runs argv and keeps the first maxCommandOutput bytes of its
// standard output; the rest is read and dropped, so the command never
// blocks on a full pipe.
func RunCommand(ctx context.Context, argv ...string) ([]byte, error) {
	cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
	out := &headBuffer{max: maxCommandOutput}
	cmd.Stdout = out
	cmd.WaitDelay = time.Second
	err := cmd.Run()
	return out.b.Bytes(), err
}

// headBuffer keeps the first max bytes written to it.
type headBuffer struct {
	b   bytes.Buffer
	max int
}

func (w *headBuffer) Write(p []byte) (int, error) {
	if room := w.max - w.b.Len(); room > 0 {
		w.b.Write(p[:min(len(p), room)])
	}
	return len(p), nil
}

// cloudInitStage is the stage cloud-init's status.json names: v1.stage,
// null when it runs none.
func cloudInitStage(path string) string {
	var status struct {
		V1 struct {
			Stage *string `json:"stage"`
		} `json:"v1"`
	}
	if err := json.Unmarshal(headOf(path, 1<<20), &status); err != nil || status.V1.Stage == nil {
		return ""
	}
	return *status.V1.Stage
}

func exists(path string) bool {
	if path == "" {
		return false
	}
	_, err := os.Lstat(path)
	return err == nil
}

// openRegular opens path for reading when it is a regular file; the open
// does not block on a FIFO put in its place, nor does a read after it.
func openRegular(path string) (*os.File, os.FileInfo) {
	f, err := os.OpenFile(path, os.O_RDONLY|syscall.O_NONBLOCK, 0)
	if err != nil {
		return nil, nil
	}
	fi, err := f.Stat()
	if err != nil || !fi.Mode().IsRegular() {
		f.Close()
		return nil, nil
	}
	return f, fi
}

// headOf is the first n bytes of the regular file at path; nothing when
// it cannot be read.
func headOf(path string, n int64) []byte {
	f, _ := openRegular(path)
	if f == nil {
		return nil
	}
	defer f.Close()
	b, _ := io.ReadAll(io.LimitReader(f, n))
	return b
}

// tailOf is the last n bytes of the regular file at path.
func tailOf(path string, n int64) []byte {
	f, fi := openRegular(path)
	if f == nil {
		return nil
	}
	defer f.Close()
	if off := fi.Size() - n; off > 0 {
		if _, err := f.Seek(off, io.SeekStart); err != nil {
			return nil
		}
	}
	b, _ := io.ReadAll(io.LimitReader(f, n))
	return b
}

// lastLine is the last line of b with anything but spaces in it.
func lastLine(b []byte) string {
	lines := bytes.Split(b, []byte("\n"))
	for i := len(lines) - 1; i >= 0; i-- {
		if l := bytes.TrimSpace(lines[i]); len(l) > 0 {
			return string(l)
		}
	}
	return ""
}

// oneLine is the first line of s, trimmed, in valid UTF-8 (a proto
// string must be: one byte of Latin-1 in a log line would otherwise fail
// every Send, and the host would never hear the guest is provisioned),
// and cut to MaxText bytes on a rune boundary. Other control characters
// are left to the host, which treats every string from the guest as
// hostile anyway.
func oneLine(s string) string {
	s, _, _ = strings.Cut(s, "\n")
	s = strings.TrimSpace(strings.ToValidUTF8(s, "\uFFFD"))
	if len(s) <= MaxText {
		return s
	}
	cut := MaxText
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return s[:cut]
}
