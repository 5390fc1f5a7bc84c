package qemu

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os/exec"
	"strings"
	"time"

	"github.com/coworkhq/cowork/hostd/fsjail"
	"github.com/coworkhq/cowork/hostd/machine"
	"github.com/coworkhq/cowork/internal/rotlog"
	"github.com/coworkhq/cowork/internal/sysproc"
	"github.com/coworkhq/cowork/internal/unixsock"
)

// virtiofsdPaths are where virtiofsd lives: the C one of Debian 12's
// qemu-system-common first (the one CI runs), then the Rust one, on PATH or
// in /usr/libexec, for systems whose QEMU no longer ships the C one. Both
// run in the jail, for root and normal users alike.
var virtiofsdPaths = []string{"/usr/lib/qemu/virtiofsd", "virtiofsd", "/usr/libexec/virtiofsd"}

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
	cmd *exec.Cmd
	// exited gets how the process ended, once, then is closed: a second
	// receive returns at once (nil), so err keeps the answer.
	exited chan error
	err    error // set before exited closes
}

// start runs cmd and reaps it when it exits; log, its output, is closed
// then, once all of it is written.
func start(cmd *exec.Cmd, log io.Closer) (*process, error) {
	// A grandchild holding the output pipe must not hold up the reaping.
	cmd.WaitDelay = 5 * time.Second
	if err := cmd.Start(); err != nil {
		log.Close()
		return nil, err
	}
	p := &process{cmd: cmd, exited: make(chan error, 1)}
	go func() {
		err := cmd.Wait()
		log.Close()
		p.err = err
		p.exited <- err
		close(p.exited)
	}()
	return p, nil
}

// Bounds of a helper's log (qemu.log, virtiofsd.log): what QEMU and
// virtiofsd print can be provoked by the guest.
const (
	helperLogMax  = 1 << 20
	helperLogKeep = 1
)

// helperLog is a fresh capped log for a helper's output.
func helperLog(path string) (*rotlog.File, error) {
	return rotlog.Open(path, rotlog.Options{MaxSize: helperLogMax, Keep: helperLogKeep, Fresh: true})
}

// kill ends the process and waits until it is reaped.
func (p *process) kill() {
	_ = p.cmd.Process.Kill()
	<-p.exited
}

// startVirtiofsd serves share on a vhost-user socket at sock, logging to
// logPath, and returns once it serves; a read-only share is served
// read-only by the jail (hostd/fsjail). virtiofsd runs in the jail (hostd/fsjail): whatever
// identity the guest names, what it makes in dir belongs to dir's owner,
// with no set-id bits, device nodes or file capabilities. hostd listens on
// sock itself and hands virtiofsd the socket, so that the owner, which
// virtiofsd runs as, need not reach hostd's run folder. It dies with hostd
// (SIGKILL on parent death).
func startVirtiofsd(ctx context.Context, share machine.Share, sock, logPath string, guestUID, guestGID int, log *slog.Logger) (*process, error) {
	bin, rust, err := findVirtiofsd()
	if err != nil {
		return nil, err
	}
	dir := share.Dir
	jail, err := fsjail.ForWorkspace(dir, guestUID, guestGID)
	if err != nil {
		return nil, fmt.Errorf("the shared folder %s: %w", dir, err)
	}
	jail.ReadOnly = share.ReadOnly
	ln, err := unixsock.Listen(sock)
	if err != nil {
		return nil, err
	}
	ul := ln.(*net.UnixListener)
	lnFile, err := ul.File()
	// virtiofsd's copy serves: when it dies, QEMU finds no one listening.
	// The socket file stays for QEMU to find.
	ul.SetUnlinkOnClose(false)
	ul.Close()
	if err != nil {
		return nil, err
	}
	defer lnFile.Close()
	cmd, err := fsjail.Command(jail, append([]string{bin}, virtiofsdArgs(dir, rust)...), lnFile)
	if err != nil {
		return nil, err
	}
	cmd.SysProcAttr = sysproc.Into(cmd.SysProcAttr, true)
	logf, err := helperLog(logPath)
	if err != nil {
		return nil, err
	}
	cmd.Stdout, cmd.Stderr = logf, logf
	log.Info("starting virtiofsd", "binary", bin, "args", cmd.Args[4:], "read_only", share.ReadOnly, "owner", fmt.Sprintf("%d:%d", jail.UID, jail.GID),
		"guest_user", fmt.Sprintf("%d:%d", jail.GuestUID, jail.GuestGID))
	p, err := start(cmd, logf)
	for _, f := range cmd.ExtraFiles {
		f.Close()
	}
	if err != nil {
		return nil, fmt.Errorf("start virtiofsd: %w", err)
	}
	if err := waitForLog(ctx, logPath, virtiofsdWaiting, 10*time.Second, p.exited); err != nil {
		p.kill()
		return nil, fmt.Errorf("virtiofsd %w: %s", err, tail(logPath, 3))
	}
	return p, nil
}

// virtiofsdWaiting is what both virtiofsds log once they serve the socket.
const virtiofsdWaiting = "Waiting for vhost-user socket connection"

// escapeOption escapes a value for the C virtiofsd's -o (libfuse's option
// parser): a comma would end it and start another option, so a folder
// named "x,source=/etc" would serve /etc; a backslash escapes.
func escapeOption(v string) string {
	return strings.NewReplacer(`\`, `\\`, ",", `\,`).Replace(v)
}

// virtiofsdArgs serves dir on descriptor 3. Extended attributes pass only
// in the user namespace (user.*). A file capability the guest sets is kept
// under a user.* name, where it means nothing to the host (virtiofsd
// insists on mapping that one name); the rest are unsupported, as on a
// file system without them. The C virtiofsd keeps CAP_MKNOD and
// CAP_SETFCAP unless told otherwise; the jail does not grant them anyway.
func virtiofsdArgs(dir string, rust bool) []string {
	const xattrmap = ":prefix:all:security.capability:user.cowork.guest.::ok:all:user.:user.::unsupported:all:::"
	if rust {
		return []string{"--fd=3", "--shared-dir=" + dir, "--cache=auto", "--sandbox=chroot",
			"--xattrmap=" + xattrmap, "--modcaps=-mknod:-setfcap"}
	}
	return []string{"--fd=3", "-o", "source=" + escapeOption(dir), "-o", "cache=auto", "-o", "sandbox=namespace",
		"-o", "xattrmap=" + xattrmap, "-o", "modcaps=-mknod:-setfcap"}
}
