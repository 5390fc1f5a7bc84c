package version

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/spf13/cobra"

	"github.com/coworkhq/cowork"
	"github.com/coworkhq/cowork/cmd/cowork/cmdutil"
	"github.com/coworkhq/cowork/cmd/cowork/cmdutil/cmdtest"
	"github.com/coworkhq/cowork/cmd/cowork/iostreams"
	"github.com/coworkhq/cowork/internal/hostdwire"
)

func command(ios *iostreams.IOStreams, runF func(*Options) error, args ...string) *cobra.Command {
	cmd := NewCmdVersion(ios, runF)
	cmdtest.Prepare(cmd, ios, args...)
	cmd.SetFlagErrorFunc(func(_ *cobra.Command, err error) error { return &cmdutil.FlagError{Err: err} })
	return cmd
}

func TestVersionFlags(t *testing.T) {
	for _, c := range []struct {
		args      []string
		json, all bool
	}{{nil, false, false}, {[]string{"--json"}, true, false}, {[]string{"--all"}, false, true}, {[]string{"--all", "--json"}, true, true}} {
		ios, _, _, _ := iostreams.Test()
		var got *Options
		err := command(ios, func(o *Options) error { got = o; return nil }, c.args...).Execute()
		if err != nil || got.JSON != c.json || got.All != c.all || got.IO != ios {
			t.Errorf("%q: %+v %v", c.args, got, err)
		}
	}
	for _, args := range [][]string{{"1.0"}, {"--short"}} {
		ios, _, _, _ := iostreams.Test()
		ran := false
		err := command(ios, func(*Options) error { ran = true; return nil }, args...).Execute()
		if ran || cmdutil.ExitCode(err) != 2 || strings.Contains(err.Error(), "\n") {
			t.Errorf("%q: ran %v, %v (exit %d), want a one-line usage error", args, ran, err, cmdutil.ExitCode(err))
		}
	}
}

var info = Info{Version: "1.2.3", Commit: "abc123", Go: "go1.99", Platform: "linux/amd64",
	Hostd:  Hostd{Path: "/opt/cowork/cowork-hostd", Version: "1.2.3", Commit: "abc123"},
	Agents: []hostdwire.Agent{{Arch: "arm64", Size: 3 << 20, SHA256: "0123456789abcdef0123456789abcdef"}}}

func TestVersionPrints(t *testing.T) {
	// Without --all the daemon binary is named, not asked.
	ios, _, out, _ := iostreams.Test()
	if err := run(&Options{IO: ios}, Info{Version: "1.2.3", Commit: "abc123", Go: "go1.99", Platform: "linux/amd64", Hostd: Hostd{Path: "/opt/cowork/cowork-hostd"}}); err != nil {
		t.Fatal(err)
	}
	if want := "cowork 1.2.3\ncommit:   abc123\ngo:       go1.99\nplatform: linux/amd64\nhostd:    /opt/cowork/cowork-hostd (its build and agents: cowork version --all)\n"; out.String() != want {
		t.Errorf("got\n%s\nwant\n%s", out, want)
	}

	ios, _, out, _ = iostreams.Test()
	if err := run(&Options{IO: ios, All: true}, info); err != nil {
		t.Fatal(err)
	}
	want := "cowork 1.2.3\ncommit:   abc123\ngo:       go1.99\nplatform: linux/amd64\nhostd:    /opt/cowork/cowork-hostd (same build)\nagent:    linux/arm64 3.0 MiB sha256:0123456789abcdef\n"
	if out.String() != want {
		t.Errorf("got\n%s\nwant\n%s", out, want)
	}

	ios, _, out, _ = iostreams.Test()
	if err := run(&Options{All: true, IO: ios}, Info{Version: "dev", Hostd: Hostd{Path: "/h", Version: "dev"}}); err != nil || !strings.Contains(out.String(), "agents:   none embedded") {
		t.Errorf("without agents: %q %v", out, err)
	}

	// A daemon from another build is named, and how to fix it.
	ios, _, out, _ = iostreams.Test()
	other := info
	other.Hostd.Commit = "fff000"
	if err := run(&Options{All: true, IO: ios}, other); err != nil || !strings.Contains(out.String(), "commit fff000): another build than this cowork") {
		t.Errorf("a mismatched hostd: %q %v", out, err)
	}
	ios, _, out, _ = iostreams.Test()
	if err := run(&Options{IO: ios}, Info{Version: "dev", Hostd: Hostd{Err: "cowork-hostd is not installed"}}); err != nil ||
		!strings.Contains(out.String(), "hostd:    unavailable: cowork-hostd is not installed") || strings.Contains(out.String(), "none embedded") {
		t.Errorf("no hostd: %q %v", out, err)
	}

	ios, _, out, _ = iostreams.Test()
	var back Info
	if err := run(&Options{All: true, IO: ios, JSON: true}, info); err != nil || json.Unmarshal(out.Bytes(), &back) != nil ||
		back.Version != "1.2.3" || back.Commit != "abc123" || len(back.Agents) != 1 || back.Agents[0].SHA256 != info.Agents[0].SHA256 {
		t.Errorf("--json: %q %v", out, err)
	}
}

// TestCurrent checks what Current asks: without all it only looks for the
// daemon binary (a script that does not exist would fail the ask); with all
// it runs it and takes its answer.
func TestCurrent(t *testing.T) {
	dir := t.TempDir()
	fake := filepath.Join(dir, "cowork-hostd")
	answer := `{"version":"9.9","commit":"c0ffee","agents":[{"arch":"arm64","size":1,"sha256":"0123456789abcdef0123"}]}`
	if err := os.WriteFile(fake, []byte("#!/bin/sh\n[ \"$1\" = version ] && echo '"+answer+"'\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	t.Setenv(hostdwire.Env, fake)
	got := Current(context.Background(), false)
	if got.Hostd.Path != fake || got.Hostd.Err != "" || got.Hostd.Commit != "" || got.Agents != nil || got.Version == "" {
		t.Errorf("without all: %+v", got)
	}
	got = Current(context.Background(), true)
	if got.Hostd.Path != fake || got.Hostd.Commit != "c0ffee" || len(got.Agents) != 1 {
		t.Errorf("with all: %+v", got)
	}
	t.Setenv(hostdwire.Env, filepath.Join(dir, "missing"))
	if got := Current(context.Background(), false); got.Hostd.Err == "" {
		t.Errorf("a missing daemon binary: %+v", got)
	}
}

// cowork-hostd-kubevirt, when installed, is named, and with --all asked
// for its build; when it is not, nothing is said of it.
func TestVersionNamesTheKubeVirtDaemon(t *testing.T) {
	dir := t.TempDir()
	hostd := filepath.Join(dir, "cowork-hostd")
	os.WriteFile(hostd, []byte("#!/bin/sh\necho '{\"version\":\"dev\",\"commit\":\"c0ffee\"}'\n"), 0o755)
	t.Setenv(hostdwire.Env, hostd)
	kv := filepath.Join(dir, "cowork-hostd-kubevirt")
	os.WriteFile(kv, []byte("#!/bin/sh\n[ \"$1\" = version ] && echo '{\"version\":\"9.9\",\"commit\":\"beef00\"}'\n"), 0o755)
	t.Setenv(cowork.KubeVirtHostdEnv, kv)
	got := Current(context.Background(), false)
	if got.HostdKubeVirt == nil || got.HostdKubeVirt.Path != kv || got.HostdKubeVirt.Commit != "" {
		t.Errorf("without all: %+v", got.HostdKubeVirt)
	}
	got = Current(context.Background(), true)
	if got.HostdKubeVirt == nil || got.HostdKubeVirt.Commit != "beef00" {
		t.Fatalf("with all: %+v", got.HostdKubeVirt)
	}
	ios, _, out, _ := iostreams.Test()
	if err := run(&Options{IO: ios, All: true}, got); err != nil || !strings.Contains(out.String(), "kubevirt: "+kv+" 9.9 (commit beef00): another build than this cowork") {
		t.Errorf("another build's kubevirt daemon: %q %v", out, err)
	}
	t.Setenv(cowork.KubeVirtHostdEnv, "")
	t.Setenv("PATH", dir+"/none")
	ios, _, out, _ = iostreams.Test()
	if got := Current(context.Background(), false); got.HostdKubeVirt != nil {
		t.Errorf("not installed: %+v", got.HostdKubeVirt)
	} else if err := run(&Options{IO: ios}, got); err != nil || strings.Contains(out.String(), "kubevirt") {
		t.Errorf("not installed, printed: %q %v", out, err)
	}
}
