package deletecmd

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/creack/pty"

	"github.com/coworkhq/cowork"
	"github.com/coworkhq/cowork/cmd/cowork/cmdutil"
	"github.com/coworkhq/cowork/cmd/cowork/iostreams"
	"github.com/coworkhq/cowork/hostd/instance"
	"github.com/coworkhq/cowork/hostd/instance/instancetest"
)

// newInstance makes a stopped instance in a fresh COWORK_HOME.
func newInstance(t *testing.T) (instance.Paths, *instance.Config) {
	t.Helper()
	p, cfg := instancetest.New(t, instance.Config{})
	os.WriteFile(p.Disk(), []byte("disk"), 0o600)
	return p, cfg
}

// onTerminal runs delete with stdin on a pseudo-terminal, as a person at a
// keyboard would, typing answer to its question.
func onTerminal(t *testing.T, answer string, args ...string) (string, error) {
	t.Helper()
	ptmx, tty, err := pty.Open()
	if err != nil {
		t.Skipf("no pseudo-terminal: %v", err)
	}
	defer ptmx.Close()
	defer tty.Close()
	ios := iostreams.FromFiles(tty, tty, tty)
	ios.In = strings.NewReader(answer) // what is typed; stdin stays a terminal
	var errOut bytes.Buffer
	ios.Out, ios.ErrOut = &bytes.Buffer{}, &errOut
	name := instance.DefaultName
	cmd := NewCmdDelete(ios, &name, nil)
	cmd.SetArgs(args)
	cmd.SilenceErrors, cmd.SilenceUsage = true, true
	err = cmd.ExecuteContext(context.Background())
	return errOut.String(), err
}

func TestDeleteAsksOnATerminal(t *testing.T) {
	p, cfg := newInstance(t)

	for _, no := range []string{"n\n", "\n", "whatever\n", ""} {
		out, err := onTerminal(t, no)
		var exit *cmdutil.ExitError
		if !errors.As(err, &exit) || exit.Code != 1 {
			t.Fatalf("answer %q: %v, want exit code 1", no, err)
		}
		if !strings.Contains(out, "Delete instance sandbox and its disk ("+p.Dir()+")? The workspace "+cfg.Workspace+" is kept. [y/N] ") ||
			!strings.Contains(out, "not deleted") {
			t.Fatalf("answer %q: stderr %q", no, out)
		}
		if _, err := os.Stat(p.Disk()); err != nil {
			t.Fatalf("answer %q removed the disk: %v", no, err)
		}
	}

	out, err := onTerminal(t, "y\n")
	if err != nil {
		t.Fatalf("answer y: %v\n%s", err, out)
	}
	if !strings.Contains(out, "deleted sandbox") {
		t.Errorf("answer y: stderr %q", out)
	}
	if _, err := os.Stat(p.Dir()); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("answer y left the instance directory: %v", err)
	}
	if _, err := os.Stat(cfg.Workspace); err != nil {
		t.Errorf("delete removed the workspace: %v", err)
	}
}

func TestDeleteWithoutATerminal(t *testing.T) {
	p, _ := newInstance(t)
	ios, in, _, errOut := iostreams.Test()
	in.WriteString("y\n") // piped input is no answer
	name := instance.DefaultName
	cmd := NewCmdDelete(ios, &name, nil)
	cmd.SetArgs(nil)
	cmd.SilenceErrors, cmd.SilenceUsage = true, true
	err := cmd.ExecuteContext(context.Background())
	if cmdutil.ExitCode(err) != 2 || !strings.Contains(err.Error(), "--yes") {
		t.Fatalf("got %v (exit %d), want a usage error naming --yes", err, cmdutil.ExitCode(err))
	}
	if _, err := os.Stat(p.Disk()); err != nil {
		t.Fatalf("the disk went without an answer: %v", err)
	}

	cmd = NewCmdDelete(ios, &name, nil)
	cmd.SetArgs([]string{"--yes"})
	if err := cmd.ExecuteContext(context.Background()); err != nil {
		t.Fatalf("--yes: %v\n%s", err, errOut)
	}
	if _, err := os.Stat(p.Dir()); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("--yes left the instance directory: %v", err)
	}
}

func TestDeleteFlags(t *testing.T) {
	for _, c := range []struct {
		args       []string
		yes, force bool
	}{
		{nil, false, false},
		{[]string{"-y"}, true, false},
		{[]string{"--yes"}, true, false},
		{[]string{"-f"}, false, true},
		{[]string{"--force"}, false, true},
		{[]string{"--keep-cluster-objects"}, false, false},
	} {
		ios, _, _, _ := iostreams.Test()
		name := "box"
		var got *Options
		cmd := NewCmdDelete(ios, &name, func(o *Options) error { got = o; return nil })
		cmd.SetArgs(c.args)
		if err := cmd.Execute(); err != nil {
			t.Fatal(err)
		}
		keep := len(c.args) > 0 && c.args[0] == "--keep-cluster-objects"
		if got.Name != "box" || got.Yes != c.yes || got.Force != c.force || got.KeepClusterObjects != keep {
			t.Errorf("%q: %+v", c.args, got)
		}
	}
}

// deleteTyping runs delete as a person at a terminal typing typed.
func deleteTyping(t *testing.T, typed string, args ...string) (string, error) {
	t.Helper()
	ios, in, _, errOut := iostreams.Test()
	ios.SetStdinTTY(true)
	in.WriteString(typed)
	name := instance.DefaultName
	cmd := NewCmdDelete(ios, &name, nil)
	cmd.SetArgs(args)
	cmd.SilenceErrors, cmd.SilenceUsage = true, true
	err := cmd.ExecuteContext(context.Background())
	return errOut.String(), err
}

// Answered no, delete leaves a running instance as it is: not stopped,
// its disk and workspace where they were.
func TestDeleteAnsweredNoLeavesARunningInstance(t *testing.T) {
	p, cfg := newInstance(t)
	h := instancetest.Running(t, p, true)
	out, err := deleteTyping(t, "n\n")
	if cmdutil.ExitCode(err) != 1 || !strings.Contains(out, "not deleted") {
		t.Fatalf("answer n: %v\n%s", err, out)
	}
	if s := h.Stops(); len(s) != 0 || !instance.Held(p) {
		t.Fatalf("answer n stopped the instance: %v", s)
	}
	for _, f := range []string{p.Disk(), p.Config(), cfg.Workspace} {
		if _, err := os.Stat(f); err != nil {
			t.Errorf("answer n: %v", err)
		}
	}

	// Answered yes, it shuts the guest down cleanly (no --force) first.
	if out, err := deleteTyping(t, "yes\n"); err != nil {
		t.Fatalf("answer yes: %v\n%s", err, out)
	}
	if s := h.Stops(); len(s) != 1 || s[0].Force {
		t.Errorf("answer yes: stops %v, want one clean stop", s)
	}
	if _, err := os.Stat(cfg.Workspace); err != nil {
		t.Errorf("delete removed the workspace: %v", err)
	}
}

// A workspace inside the instance's directory (a config edited by hand,
// a COWORK_HOME set oddly) would go with it: delete refuses instead.
func TestDeleteNeverTakesTheWorkspace(t *testing.T) {
	for _, rel := range []string{".", "ws"} {
		t.Setenv("COWORK_HOME", t.TempDir())
		p, _ := instance.PathsFor(instance.DefaultName)
		cfg := instance.Config{Name: instance.DefaultName, Workspace: filepath.Join(p.Dir(), rel)}
		os.MkdirAll(cfg.Workspace, 0o700)
		if err := cfg.Save(p.Dir()); err != nil {
			t.Fatal(err)
		}
		os.WriteFile(filepath.Join(cfg.Workspace, "work.txt"), []byte("work"), 0o600)
		out, err := deleteTyping(t, "", "--force")
		if err == nil || !strings.Contains(err.Error(), "is inside its directory") {
			t.Errorf("workspace %s: %v\n%s", cfg.Workspace, err, out)
		}
		if b, _ := os.ReadFile(filepath.Join(cfg.Workspace, "work.txt")); string(b) != "work" {
			t.Errorf("workspace %s: the work went", cfg.Workspace)
		}
		if _, err := os.Stat(p.Config()); err != nil {
			t.Errorf("workspace %s: %v", cfg.Workspace, err)
		}
	}
}

// A kubevirt instance's objects in its cluster go first, by
// `cowork-hostd-kubevirt delete --name NAME`, run while the instance's
// folder is still whole; when that fails, delete says why and how to
// retry, and removes nothing here.
func TestDeleteAClusterInstance(t *testing.T) {
	for _, code := range []string{"0", "1"} {
		p, cfg := instancetest.New(t, instance.Config{
			Name: "box", Backend: instance.BackendKubeVirt,
			Cluster: &instance.Cluster{Namespace: "team-a", Image: "quay.io/containerdisks/ubuntu:22.04"},
		})
		dir := t.TempDir()
		bin, args := filepath.Join(dir, instance.KubeVirtHostd), filepath.Join(dir, "args")
		script := "#!/bin/sh\n" +
			"test -f " + p.Config() + " && echo \"$@\" >> " + args + "\n" +
			"echo '" + instance.KubeVirtHostd + ": delete VM team-a/box: connection refused' >&2\n" +
			"exit " + code + "\n"
		if err := os.WriteFile(bin, []byte(script), 0o700); err != nil {
			t.Fatal(err)
		}
		t.Setenv(cowork.KubeVirtHostdEnv, bin)
		ios, _, _, errOut := iostreams.Test()
		name := "box"
		cmd := NewCmdDelete(ios, &name, nil)
		cmd.SetArgs([]string{"--yes"})
		cmd.SilenceErrors, cmd.SilenceUsage = true, true
		err := cmd.ExecuteContext(context.Background())
		if b, _ := os.ReadFile(args); string(b) != "delete --name box\n" {
			t.Errorf("exit %s: the binary ran with %q (with the config there), want delete --name box", code, b)
		}
		if code == "0" {
			if err != nil {
				t.Fatalf("exit 0: %v\n%s", err, errOut)
			}
			if _, err := os.Stat(p.Dir()); !errors.Is(err, os.ErrNotExist) {
				t.Errorf("exit 0 left the instance directory: %v", err)
			}
			continue
		}
		want := "could not delete instance box's objects in the cluster (delete VM team-a/box: connection refused); nothing was deleted on this machine; " +
			"run `cowork delete --name box` again once the cluster can be reached, or `cowork delete --name box --keep-cluster-objects` to drop only this machine's record"
		if cmdutil.ExitCode(err) != 1 || err.Error() != want {
			t.Fatalf("exit 1: %v (exit %d), want %q", err, cmdutil.ExitCode(err), want)
		}
		if strings.Contains(errOut.String(), "deleted box") {
			t.Errorf("exit 1: stderr %q", errOut)
		}
		if _, err := os.Stat(p.Config()); err != nil {
			t.Errorf("exit 1 removed the config: %v", err)
		}
		if _, err := os.Stat(cfg.Workspace); err != nil {
			t.Errorf("exit 1: %v", err)
		}
	}
}

// newClusterInstance makes a stopped kubevirt instance box in a fresh
// COWORK_HOME, in namespace team-a of kubeconfig context kctx.
func newClusterInstance(t *testing.T, kctx string) (instance.Paths, *instance.Config) {
	t.Helper()
	return instancetest.New(t, instance.Config{
		Name: "box", Backend: instance.BackendKubeVirt,
		Cluster: &instance.Cluster{Context: kctx, Namespace: "team-a", Image: "quay.io/containerdisks/ubuntu:22.04"},
	})
}

// deleteBox runs `cowork delete --name box args...`.
func deleteBox(t *testing.T, args ...string) (string, error) {
	t.Helper()
	ios, _, _, errOut := iostreams.Test()
	name := "box"
	cmd := NewCmdDelete(ios, &name, nil)
	cmd.SetArgs(args)
	cmd.SilenceErrors, cmd.SilenceUsage = true, true
	err := cmd.ExecuteContext(context.Background())
	return errOut.String(), err
}

// Without cowork-hostd-kubevirt, delete says it is missing (how to
// build it) and the two ways on; nothing is removed here.
func TestDeleteAClusterInstanceWithoutItsDaemon(t *testing.T) {
	p, _ := newClusterInstance(t, "")
	t.Setenv(cowork.KubeVirtHostdEnv, "")
	t.Setenv("PATH", t.TempDir())
	out, err := deleteBox(t, "--yes")
	msg := ""
	if err != nil {
		msg = err.Error()
	}
	for _, want := range []string{
		"could not delete instance box's objects in the cluster (" + instance.KubeVirtHostd + " is not installed",
		"`make kubevirt` builds it",
		"nothing was deleted on this machine; run `cowork delete --name box` again once " + instance.KubeVirtHostd + " is installed, " +
			"or `cowork delete --name box --keep-cluster-objects` to drop only this machine's record",
	} {
		if !strings.Contains(msg, want) {
			t.Errorf("got %q (exit %d), want it to say %q", msg, cmdutil.ExitCode(err), want)
		}
	}
	if cmdutil.ExitCode(err) != 1 || strings.Contains(out, "deleted box") {
		t.Errorf("exit %d, stderr %q", cmdutil.ExitCode(err), out)
	}
	if _, err := os.Stat(p.Config()); err != nil {
		t.Errorf("the config went: %v", err)
	}
}

// --keep-cluster-objects removes a kubevirt instance from this machine
// without running cowork-hostd-kubevirt, and prints the kubectl command
// that deletes what the cluster may hold of it (--context only when the
// instance has one).
func TestDeleteKeepClusterObjects(t *testing.T) {
	for kctx, want := range map[string]string{
		"":            "kubectl -n team-a delete --ignore-not-found vm/cowork-box secret/cowork-box-cloudinit\n",
		"kind-cowork": "kubectl --context kind-cowork -n team-a delete --ignore-not-found vm/cowork-box secret/cowork-box-cloudinit\n",
		"my admin":    "kubectl --context 'my admin' -n team-a delete --ignore-not-found vm/cowork-box secret/cowork-box-cloudinit\n",
	} {
		p, cfg := newClusterInstance(t, kctx)
		ran := filepath.Join(t.TempDir(), "ran")
		bin := filepath.Join(t.TempDir(), instance.KubeVirtHostd)
		os.WriteFile(bin, []byte("#!/bin/sh\ntouch "+ran+"\nexit 1\n"), 0o700)
		t.Setenv(cowork.KubeVirtHostdEnv, bin)
		out, err := deleteBox(t, "--yes", "--keep-cluster-objects")
		if err != nil {
			t.Fatalf("context %q: %v\n%s", kctx, err, out)
		}
		if _, err := os.Stat(ran); err == nil {
			t.Errorf("context %q: the cluster was asked", kctx)
		}
		if _, err := os.Stat(p.Dir()); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("context %q: the instance's folder is still there: %v", kctx, err)
		}
		if _, err := os.Stat(cfg.Workspace); err != nil {
			t.Errorf("context %q: %v", kctx, err)
		}
		if !strings.Contains(out, "removed box from this machine") || !strings.HasSuffix(out, "\n  "+want) {
			t.Errorf("context %q: stderr %q, want it to end with %q", kctx, out, want)
		}
	}
}

// --keep-cluster-objects of an instance on this machine is a usage
// error, one line, and nothing is removed.
func TestDeleteKeepClusterObjectsOfALocalInstance(t *testing.T) {
	p, _ := instancetest.New(t, instance.Config{Name: "box"})
	out, err := deleteBox(t, "--yes", "--keep-cluster-objects")
	if cmdutil.ExitCode(err) != 2 || err == nil || strings.Contains(err.Error(), "\n") ||
		!strings.Contains(err.Error(), "--keep-cluster-objects is for an instance on a cluster; box runs on this machine") {
		t.Fatalf("got %v (exit %d), stderr %q; want a one-line usage error", err, cmdutil.ExitCode(err), out)
	}
	if _, err := os.Stat(p.Config()); err != nil {
		t.Errorf("the config went: %v", err)
	}
}
