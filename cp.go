package cowork

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"strings"
	"time"

	"github.com/coworkhq/cowork/hostd/agentclient"
	"github.com/coworkhq/cowork/internal/termsafe"
	"github.com/coworkhq/cowork/internal/treecopy"
)

// Execer runs a process in the guest: an *agentclient.Client, or an
// *Instance through its agent.
type Execer interface {
	Exec(ctx context.Context, o agentclient.ExecOptions) (agentclient.ExitStatus, error)
}

// CopyOptions tune CopyIn and CopyOut.
type CopyOptions struct {
	// User is the guest user the files are read or written as (the
	// agent's default user when empty); they belong to that user.
	User string
	// Progress, when set, is called with the bytes moved so far.
	Progress func(int64)
}

// GuestWorkdir is where a relative guest path starts: the share, as for
// exec.
const GuestWorkdir = "/workspace"

// copyTrailer is the empty file CopyIn's stream ends with: the guest's
// tar takes a stream cut at a file's end for a whole one, and the script
// moves nothing into place without it.
const copyTrailer = ".cowork-cp-end"

// copyInScript unpacks the stream on stdin beside its destination and
// moves it into place only once it is all there: into the folder $1 as
// $2, or as $1 itself. A folder is never merged into one that exists. A
// link to a folder at $1 is followed only when $3 says DST ended in a
// slash (as on the host: a link the guest planted does not redirect a
// copy). Names are split with the shell's own expansions: $(dirname)
// would drop a name's trailing newlines.
const copyInScript = `set -e
dst=$1 name=$2 into=$3
if [ -L "$dst" ] && [ -d "$dst" ] && [ -z "$into" ]; then
	echo "$dst is a link to a folder in the guest: write $dst/ to copy into the folder it links to" >&2; exit 4
fi
if [ -d "$dst" ]; then dir=$dst final=$dst/$name
elif [ -n "$into" ]; then echo "$dst: no such folder in the guest" >&2; exit 3
else dir=${dst%/*} final=$dst; [ -n "$dir" ] || dir=/
fi
[ -d "$dir" ] || { echo "$dir: no such folder in the guest" >&2; exit 3; }
tmp=$(mktemp -d "$dir/.cowork-cp.XXXXXX")
errs=$(mktemp)
trap 'rm -rf -- "$tmp" "$errs"' EXIT
trap 'exit 1' HUP INT TERM
` + modesRefusedOnly + `
if ! LC_ALL=C tar -C "$tmp" -xpf - --no-same-owner 2>"$errs" && { [ ! -f "$tmp/` + copyTrailer + `" ] || ! modes_refused_only "$errs"; }; then
	cat "$errs" >&2
	echo "nothing was written; $(df -Ph -- "$dir" | awk 'NR==2 {print $4}') free at $dir" >&2; exit 6
fi
[ -f "$tmp/` + copyTrailer + `" ] || { echo "the copy was cut short; nothing was written" >&2; exit 5; }
if [ -e "$final" ] || [ -L "$final" ]; then
	if { [ -d "$final" ] && [ ! -L "$final" ]; } || [ -d "$tmp/$name" ]; then
		echo "$final exists in the guest: remove it, or copy to a new name" >&2; exit 4
	fi
fi
mv -fT -- "$tmp/$name" "$final"
`

// modesRefusedOnly defines modes_refused_only FILE, which says whether
// every error tar wrote to FILE is a mode or an owner the file system
// refused with EPERM, and there was at least one. virtiofs under
// Virtualization.framework refuses some chmod and chown calls so (the
// files are the Mac user's on the host); the files themselves arrived,
// with the modes the share gives them, and the copy goes on. tar runs
// with LC_ALL=C, so that its messages are these.
const modesRefusedOnly = `modes_refused_only() {
	[ -s "$1" ] && ! grep -qv \
		-e ': Cannot change mode to .*: Operation not permitted$' \
		-e ': Cannot change ownership to .*: Operation not permitted$' \
		-e '^tar: Exiting with failure status due to previous errors$' "$1"
}`

// copyOutScript writes $1 (a file, a folder, a link) to stdout as a tar
// stream. --no-unquote: tar would read a backslash in a name as an
// escape, and archive another file.
const copyOutScript = `[ -e "$1" ] || [ -L "$1" ] || { echo "$1: no such file or folder in the guest" >&2; exit 3; }
dir=${1%/*}; [ -n "$dir" ] || dir=/
exec tar --no-unquote -C "$dir" -cf - -- "${1##*/}"
`

// errGuestStopped ends a stream the guest stopped taking.
var errGuestStopped = errors.New("the guest stopped reading")

// CopyIn copies src on the host (a file, a folder and all in it, or a
// link, which stays a link) to dst in the guest: into dst when it is a
// folder, else as dst. Modes and times are kept, where the guest's file
// system lets them be set (modesRefusedOnly); the files belong to the
// guest user. Nothing appears at dst unless all of it arrived.
func CopyIn(ctx context.Context, g Execer, src, dst string, o CopyOptions) (treecopy.Stats, error) {
	into := ""
	if strings.HasSuffix(dst, "/") {
		into = "into" // a link to a folder is followed
	}
	dst = GuestPath(dst)
	name := filepath.Base(filepath.Clean(src))
	if name == string(filepath.Separator) || name == "." || name == ".." || name == copyTrailer {
		return treecopy.Stats{}, fmt.Errorf("copy %s: name a file or a folder, not %q", src, name)
	}
	if _, err := os.Lstat(src); err != nil {
		return treecopy.Stats{}, err
	}
	pr, pw := io.Pipe()
	var st treecopy.Stats
	packed := make(chan error, 1)
	go func() {
		var err error
		st, err = treecopy.Pack(pw, src, name, treecopy.PackOptions{Progress: o.Progress, Trailer: copyTrailer})
		pw.CloseWithError(err) // a failed Pack's stream lacks the trailer
		packed <- err
	}()
	err := runGuest(ctx, g, o.User, pr, nil, copyInScript, dst, name, into)
	pr.CloseWithError(errGuestStopped)
	if perr := <-packed; perr != nil && !errors.Is(perr, errGuestStopped) {
		return st, fmt.Errorf("read %s: %w", src, perr) // the cause of the guest's failure
	}
	return st, err
}

// afterEnd is how much the guest may send after its stream's end: its
// tar pads the last record to 10 KiB.
const afterEnd = 1 << 20

// CopyOut copies src in the guest to dst on the host: into dst when it is
// a folder, else as dst (a new name, or a file it replaces). The guest's
// stream is unpacked as treecopy.Unpack does: nothing outside dst is
// written, nothing privileged is made, the host's disk keeps a reserve;
// and nothing appears at dst unless all of it arrived and the guest's tar
// says it sent everything.
func CopyOut(ctx context.Context, g Execer, src, dst string, o CopyOptions) (treecopy.Stats, error) {
	src = GuestPath(src)
	name := path.Base(src)
	if name == "/" || name == "." || name == ".." {
		return treecopy.Stats{}, fmt.Errorf("copy %s: name a file or a folder in the guest, not %q", src, name)
	}
	dst, err := hostDst(dst, name)
	if err != nil {
		return treecopy.Stats{}, err
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	pr, pw := io.Pipe()
	var ranErr error
	ran := make(chan struct{})
	go func() {
		ranErr = runGuest(ctx, g, o.User, nil, pw, copyOutScript, src)
		pw.Close()
		close(ran)
	}()
	commit := func() error {
		// The stream's end is read: take the padding after it, and no
		// more, so that the guest's tar can exit and say how it went.
		errMore := errors.New("the guest sent more after its stream's end")
		drained := make(chan error, 1)
		go func() {
			n, _ := io.CopyN(io.Discard, pr, afterEnd)
			if n == afterEnd {
				pr.CloseWithError(errMore)
				drained <- errMore
				return
			}
			drained <- nil
		}()
		select {
		case <-ran:
		case <-time.After(afterEndGrace):
			cancel()
			return errors.New("the guest's tar did not exit after its stream's end; nothing was written")
		}
		if err := <-drained; err != nil {
			return err
		}
		return ranErr
	}
	st, err := treecopy.Unpack(pr, "", dst, treecopy.Options{Progress: o.Progress, Commit: commit})
	pr.CloseWithError(errGuestStopped) // a stream refused midway: the guest's tar stops
	<-ran
	switch {
	case err == nil:
		return st, nil
	case ranErr != nil && (err == ranErr || errors.Is(err, treecopy.ErrEmpty)):
		return st, ranErr // the guest's own words: no such file, permission denied
	case errors.Is(err, treecopy.ErrExists):
		if cur, lerr := os.Lstat(dst); lerr == nil && !cur.IsDir() {
			return st, fmt.Errorf("%s is a file, and the copy is a folder: remove it, or copy to a new name", dst)
		}
		return st, fmt.Errorf("%s is a folder already: remove it, or copy to a new name", dst)
	}
	return st, fmt.Errorf("copy %s to %s: %w", src, dst, err)
}

// afterEndGrace is how long the guest's tar has to exit once its stream
// ended. A var for tests.
var afterEndGrace = 30 * time.Second

// hostDst is where CopyOut puts the guest's name: into dst when it is a
// folder, else at dst. A link to a folder is followed only when dst ends
// in a slash: a link an earlier copy brought out of the guest must not
// send the next one elsewhere.
func hostDst(dst, name string) (string, error) {
	if strings.HasSuffix(dst, "/") || strings.HasSuffix(dst, string(filepath.Separator)) {
		if st, err := os.Stat(dst); err != nil || !st.IsDir() {
			return "", fmt.Errorf("copy to %s: no such folder", dst)
		}
		return filepath.Join(dst, name), nil
	}
	li, err := os.Lstat(dst)
	switch {
	case err == nil && li.IsDir():
		return filepath.Join(dst, name), nil
	case err == nil && li.Mode()&fs.ModeSymlink != 0:
		if st, err := os.Stat(dst); err == nil && st.IsDir() {
			return "", fmt.Errorf("%s is a link to a folder: write %s/ to copy into the folder it links to", dst, dst)
		}
		return dst, nil // a link to a file, or to nothing: the copy replaces the link
	case err != nil && !errors.Is(err, fs.ErrNotExist):
		return "", fmt.Errorf("copy to %s: %w", dst, err)
	}
	if _, err := os.Stat(filepath.Dir(dst)); err != nil {
		return "", fmt.Errorf("copy to %s: %w", dst, err)
	}
	return dst, nil
}

// CopyOutStream writes src in the guest to w as the guest's tar stream,
// as is (cowork cp SRC -).
func CopyOutStream(ctx context.Context, g Execer, src string, w io.Writer, o CopyOptions) error {
	return runGuest(ctx, g, o.User, nil, w, copyOutScript, GuestPath(src))
}

// CopyInStream unpacks the tar stream r into the guest folder dst (cowork
// cp - DST).
func CopyInStream(ctx context.Context, g Execer, r io.Reader, dst string, o CopyOptions) error {
	const script = `[ -d "$1" ] || { echo "$1: no such folder in the guest" >&2; exit 3; }
errs=$(mktemp)
trap 'rm -f -- "$errs"' EXIT
` + modesRefusedOnly + `
LC_ALL=C tar -C "$1" -xpf - --no-same-owner 2>"$errs" && exit 0
modes_refused_only "$errs" && exit 0
cat "$errs" >&2
exit 2`
	return runGuest(ctx, g, o.User, r, nil, script, GuestPath(dst))
}

// runGuest runs script with args in the guest, stdin and stdout streamed;
// a script that fails is an error quoting what it printed (made safe for a
// terminal, the guest wrote it).
func runGuest(ctx context.Context, g Execer, user string, stdin io.Reader, stdout io.Writer, script string, args ...string) error {
	var stderr bytes.Buffer
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	st, err := g.Exec(ctx, agentclient.ExecOptions{
		Argv:   append([]string{"sh", "-c", script, "cowork-cp"}, args...),
		Dir:    "/",
		User:   user,
		Stdin:  stdin,
		Stdout: stdout,
		Stderr: &limitedBuffer{b: &stderr, n: 4 << 10},
	})
	if err != nil {
		return err
	}
	if st.Code != 0 {
		msg := strings.TrimSpace(termsafe.Line(strings.ReplaceAll(strings.TrimSpace(stderr.String()), "\n", "; ")))
		if msg == "" {
			msg = fmt.Sprintf("exit %d", st.Code)
		}
		return fmt.Errorf("in the guest: %s", msg)
	}
	return nil
}

// GuestPath makes a guest path absolute from GuestWorkdir.
func GuestPath(p string) string {
	if !path.IsAbs(p) {
		p = path.Join(GuestWorkdir, p)
	}
	return path.Clean(p)
}

// limitedBuffer keeps the first n bytes written to it: a guest's error
// output is quoted, and a guest decides how much it writes.
type limitedBuffer struct {
	b *bytes.Buffer
	n int
}

func (l *limitedBuffer) Write(p []byte) (int, error) {
	if room := l.n - l.b.Len(); room > 0 {
		l.b.Write(p[:min(len(p), room)])
	}
	return len(p), nil
}

// CopyIn copies src on the host into the guest (see the function CopyIn).
func (i *Instance) CopyIn(ctx context.Context, src, dst string, o CopyOptions) (treecopy.Stats, error) {
	return CopyIn(ctx, i, src, dst, o)
}

// CopyOut copies src in the guest to the host (see the function CopyOut).
func (i *Instance) CopyOut(ctx context.Context, src, dst string, o CopyOptions) (treecopy.Stats, error) {
	return CopyOut(ctx, i, src, dst, o)
}
