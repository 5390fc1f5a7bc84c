package qemu

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"

	"github.com/coworkhq/cowork/internal/sysproc"
)

// virtiofsdPaths are where virtiofsd lives: the Rust one on PATH or in
// /usr/libexec, then the C one in Debian 12's qemu-system-common.
var virtiofsdPaths = []string{"virtiofsd", "/usr/libexec/virtiofsd", "/usr/lib/qemu/virtiofsd"}

func findVirtiofsd() (path string, rust bool, err error) {
	for _, p := range virtiofsdPaths {
		full, err := exec.LookPath(p)
		if err != nil {
			continue
		}
		help, _ := exec.Command(full, "--help").CombinedOutput()
		return full, strings.Contains(string(help), "--shared-dir"), nil
	}
	return "", false, fmt.Errorf("virtiofsd not found (looked for %s); install it (Debian: apt install qemu-system-common, or virtiofsd)", strings.Join(virtiofsdPaths, ", "))
}

// process is a helper process hostd started, and its exit.
type process struct {
	cmd    *exec.Cmd
	exited chan error
}

// start runs cmd and reaps it when it exits.
func start(cmd *exec.Cmd) (*process, error) {
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	p := &process{cmd: cmd, exited: make(chan error, 1)}
	go func() { p.exited <- cmd.Wait(); close(p.exited) }()
	return p, nil
}

// kill ends the process and waits until it is reaped.
func (p *process) kill() {
	_ = p.cmd.Process.Kill()
	<-p.exited
}

// startVirtiofsd shares dir on a vhost-user socket at sock and returns
// once it listens. It dies with hostd (SIGKILL on parent death).
func startVirtiofsd(ctx context.Context, dir, sock string, log *slog.Logger) (*process, error) {
	bin, rust, err := findVirtiofsd()
	if err != nil {
		return nil, err
	}
	var args []string
	if rust {
		args = []string{"--socket-path=" + sock, "--shared-dir=" + dir, "--cache=auto"}
		if os.Geteuid() != 0 {
			args = append(args, "--sandbox=none")
		}
	} else {
		if os.Geteuid() != 0 {
			return nil, fmt.Errorf("%s (the C virtiofsd) needs root to share the workspace; install the Rust virtiofsd, or run cowork as root", bin)
		}
		args = []string{"--socket-path=" + sock, "-o", "source=" + dir, "-o", "cache=auto", "-o", "xattr"}
	}
	cmd := exec.Command(bin, args...)
	cmd.SysProcAttr = sysproc.Attr(true)
	logf, err := os.Create(filepath.Join(filepath.Dir(sock), "virtiofsd.log"))
	if err != nil {
		return nil, err
	}
	defer logf.Close()
	cmd.Stdout, cmd.Stderr = logf, logf
	log.Info("starting virtiofsd", "binary", bin, "args", args)
	p, err := start(cmd)
	if err != nil {
		return nil, fmt.Errorf("start virtiofsd: %w", err)
	}
	// Not a test connection: virtiofsd serves one client and exits when it leaves.
	if err := waitForPath(ctx, sock, p.exited); err != nil {
		p.kill()
		return nil, fmt.Errorf("virtiofsd %w: %s", err, tail(logf.Name(), 3))
	}
	return p, nil
}
