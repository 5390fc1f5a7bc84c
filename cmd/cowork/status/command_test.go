package status

import (
	"context"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/spf13/cobra"

	"github.com/coworkhq/cowork/cmd/cowork/cmdutil"
	"github.com/coworkhq/cowork/cmd/cowork/cmdutil/cmdtest"
	"github.com/coworkhq/cowork/cmd/cowork/iostreams"
	"github.com/coworkhq/cowork/hostd/instance"
	"github.com/coworkhq/cowork/hostd/instance/instancetest"
	"github.com/coworkhq/cowork/hostd/savestate"
)

// command is `cowork status args...` on test streams, with runF (nil: run it).
func command(ios *iostreams.IOStreams, runF func(*Options) error, args ...string) *cobra.Command {
	name := instance.DefaultName
	cmd := NewCmdStatus(ios, &name, runF)
	cmdtest.Prepare(cmd, ios, args...)
	cmd.SetFlagErrorFunc(func(_ *cobra.Command, err error) error { return &cmdutil.FlagError{Err: err} })
	return cmd
}

type result struct {
	out, errOut string
	err         error
}

func status(t *testing.T, args ...string) result {
	t.Helper()
	ios, _, out, errOut := iostreams.Test()
	err := command(ios, nil, args...).ExecuteContext(context.Background())
	return result{out.String(), errOut.String(), err}
}

func TestStatusFlags(t *testing.T) {
	for _, c := range []struct {
		args []string
		json bool
	}{{nil, false}, {[]string{"--json"}, true}} {
		ios, _, _, _ := iostreams.Test()
		var got *Options
		err := command(ios, func(o *Options) error { got = o; return nil }, c.args...).Execute()
		if err != nil || got.Name != instance.DefaultName || got.JSON != c.json || got.IO != ios {
			t.Errorf("%q: %+v %v", c.args, got, err)
		}
	}
	for _, args := range [][]string{{"sandbox"}, {"--yaml"}} {
		ios, _, _, _ := iostreams.Test()
		ran := false
		err := command(ios, func(*Options) error { ran = true; return nil }, args...).Execute()
		if ran || cmdutil.ExitCode(err) != 2 || strings.Contains(err.Error(), "\n") {
			t.Errorf("%q: ran %v, %v (exit %d), want a one-line usage error", args, ran, err, cmdutil.ExitCode(err))
		}
	}
}

// newInstance makes a stopped instance with known settings.
func newInstance(t *testing.T) (instance.Paths, *instance.Config) {
	t.Helper()
	return instancetest.New(t, instance.Config{CPUs: 3, Memory: 2 << 30, Disk: 10 << 30, Arch: "arm64"})
}

// A stopped instance's status comes from its files: its config, and why
// the VM last stopped by itself.
func TestStatusOfAStoppedInstance(t *testing.T) {
	p, cfg := newInstance(t)
	os.WriteFile(p.LastStop(), []byte("the guest kernel panicked\n"), 0o600)

	r := status(t)
	for _, want := range []string{"name:       sandbox\n", "state:      stopped\n", "cpus:       3\n", "memory:     2 GiB\n",
		"workspace:  " + cfg.Workspace + "\n", "error:      the guest kernel panicked\n"} {
		if r.err != nil || !strings.Contains(r.out, want) {
			t.Errorf("status lacks %q: %+v", want, r)
		}
	}
	if strings.Contains(r.out, "hostd pid") || r.errOut != "" {
		t.Errorf("a stopped instance: %+v", r)
	}

	r = status(t, "--json")
	var st Status
	if r.err != nil || json.Unmarshal([]byte(r.out), &st) != nil {
		t.Fatalf("--json: %+v", r)
	}
	if st.Name != "sandbox" || st.State != "stopped" || st.Ready || st.CPUs != 3 || st.MemoryBytes != 2<<30 || st.DiskBytes != 10<<30 ||
		st.Arch != "arm64" || st.Workspace != cfg.Workspace || st.Error != "the guest kernel panicked" || st.HostdPid != 0 {
		t.Errorf("--json: %+v", st)
	}
}

// A hostd that died without cleaning up is noticed, and what it left
// behind removed, so that the next start does not trip over it.
func TestStatusCleansUpAfterADeadHostd(t *testing.T) {
	p, _ := newInstance(t)
	dead := 1 << 22 // above any pid_max: no process has it
	os.WriteFile(p.PidFile(), []byte(strconv.Itoa(dead)), 0o600)
	os.WriteFile(p.HostdSock(), nil, 0o600)

	r := status(t)
	if r.err != nil || !strings.Contains(r.out, "state:      stopped") ||
		!strings.Contains(r.errOut, "note: hostd (pid "+strconv.Itoa(dead)+") died without stopping the VM") {
		t.Fatalf("%+v", r)
	}
	for _, f := range []string{p.PidFile(), p.HostdSock()} {
		if _, err := os.Stat(f); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("%s is still there: %v", f, err)
		}
	}
	if r := status(t); r.errOut != "" {
		t.Errorf("the note again, with nothing left to clean: %+v", r)
	}
}

// A running instance's status is hostd's answer.
func TestStatusOfARunningInstance(t *testing.T) {
	for _, ready := range []bool{true, false} {
		p, _ := newInstance(t)
		h := instancetest.Running(t, p, ready)
		want := "running (booting)"
		if ready {
			want = "running (ready)"
		}
		r := status(t)
		if r.err != nil || !strings.Contains(r.out, "state:      "+want+"\n") || !strings.Contains(r.out, "hostd pid:  "+strconv.Itoa(os.Getpid())+"\n") {
			t.Errorf("ready %v: %+v", ready, r)
		}
		r = status(t, "--json")
		var st Status
		if r.err != nil || json.Unmarshal([]byte(r.out), &st) != nil || st.State != "running" || st.Ready != ready || st.HostdPid != os.Getpid() || st.CPUs != 3 {
			t.Errorf("ready %v, --json: %+v", ready, r)
		}
		h.Stop()
		if len(h.Stops()) != 0 {
			t.Errorf("status asked hostd to stop: %+v", h.Stops())
		}
	}
}

// With --json, even a failure prints JSON a script can read.
func TestStatusJSONWithoutAnInstance(t *testing.T) {
	t.Setenv("COWORK_HOME", t.TempDir())
	r := status(t, "--json")
	var e ErrorJSON
	if cmdutil.ExitCode(r.err) != 1 || json.Unmarshal([]byte(r.out), &e) != nil || e.Name != "sandbox" || e.State != "missing" ||
		!strings.Contains(e.Error, "instance sandbox does not exist") {
		t.Errorf("%+v", r)
	}
	if r := status(t); cmdutil.ExitCode(r.err) != 1 || r.out != "" {
		t.Errorf("without --json: %+v", r)
	}
}

// A suspended instance says so, when it was saved and how much it takes;
// a saved state whose manifest cannot be read is no suspended instance.
func TestStatusOfASuspendedInstance(t *testing.T) {
	p, _ := newInstance(t)
	if err := os.MkdirAll(p.Suspend(), 0o700); err != nil {
		t.Fatal(err)
	}
	os.WriteFile(filepath.Join(p.Suspend(), "ram"), make([]byte, 1<<20), 0o600)
	saved := time.Date(2026, 12, 5, 22, 31, 0, 0, time.Local)
	if err := savestate.Write(p.Suspend(), &savestate.Manifest{Saved: saved}); err != nil {
		t.Fatal(err)
	}
	r := status(t)
	if r.err != nil || !strings.Contains(r.out, "state:      suspended (saved 2026-12-05 22:31, 1.0 MiB; `cowork start` resumes it)\n") {
		t.Errorf("%+v", r)
	}
	r = status(t, "--json")
	var st Status
	if r.err != nil || json.Unmarshal([]byte(r.out), &st) != nil || st.State != "suspended" || st.Suspended == nil ||
		!st.Suspended.Saved.Equal(saved) || st.Suspended.Bytes < 1<<20 {
		t.Errorf("--json: %+v %+v", r, st.Suspended)
	}
	os.WriteFile(filepath.Join(p.Suspend(), savestate.ManifestName), []byte("{"), 0o600)
	if r := status(t); !strings.Contains(r.out, "state:      stopped\n") {
		t.Errorf("a broken manifest: %+v", r)
	}
}
