package cowork

import (
	"archive/tar"
	"bytes"
	"context"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/coworkhq/cowork/hostd/agentclient"
)

// localGuest runs the copy scripts on this machine, as the agent would in
// the guest: guest paths are this machine's paths.
type localGuest struct{ argv [][]string }

func (l *localGuest) Exec(ctx context.Context, o agentclient.ExecOptions) (agentclient.ExitStatus, error) {
	l.argv = append(l.argv, o.Argv)
	c := exec.CommandContext(ctx, o.Argv[0], o.Argv[1:]...)
	c.Dir, c.Stdin, c.Stdout, c.Stderr = o.Dir, o.Stdin, o.Stdout, o.Stderr
	err := c.Run()
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		return agentclient.ExitStatus{Code: ee.ExitCode()}, nil
	}
	return agentclient.ExitStatus{}, err
}

func needGNU(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("the guest's tools (GNU tar, mv -T) are Linux's")
	}
}

func write(t *testing.T, p, body string, mode os.FileMode) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, []byte(body), mode); err != nil {
		t.Fatal(err)
	}
}

func read(t *testing.T, p string) string {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func TestCopyInAndOutThroughTheScripts(t *testing.T) {
	needGNU(t)
	ctx := context.Background()
	g := &localGuest{}
	host, guest := t.TempDir(), t.TempDir()
	write(t, filepath.Join(host, "proj/src/main.go"), "package main\n", 0o640)
	write(t, filepath.Join(host, "proj/run.sh"), "#!/bin/sh\n", 0o755)
	os.Symlink("src/main.go", filepath.Join(host, "proj/link"))
	when := time.Date(2023, 5, 6, 7, 8, 9, 0, time.UTC)
	os.Chtimes(filepath.Join(host, "proj/run.sh"), when, when)

	// Into a folder, keeping the name; then as a new name.
	if _, err := CopyIn(ctx, g, filepath.Join(host, "proj"), guest, CopyOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := CopyIn(ctx, g, filepath.Join(host, "proj/run.sh"), filepath.Join(guest, "renamed.sh"), CopyOptions{}); err != nil {
		t.Fatal(err)
	}
	if got := read(t, filepath.Join(guest, "proj/src/main.go")); got != "package main\n" {
		t.Errorf("main.go: %q", got)
	}
	st, _ := os.Stat(filepath.Join(guest, "proj/run.sh"))
	if st.Mode().Perm() != 0o755 || !st.ModTime().Equal(when) {
		t.Errorf("run.sh: %v %v", st.Mode(), st.ModTime())
	}
	if l, _ := os.Readlink(filepath.Join(guest, "proj/link")); l != "src/main.go" {
		t.Errorf("link: %q", l)
	}
	if read(t, filepath.Join(guest, "renamed.sh")) != "#!/bin/sh\n" {
		t.Error("renamed.sh")
	}
	// A folder is not merged into one that is there.
	if _, err := CopyIn(ctx, g, filepath.Join(host, "proj"), guest, CopyOptions{}); err == nil || !strings.Contains(err.Error(), "exists in the guest") {
		t.Errorf("a second copy of a folder: %v", err)
	}
	if _, err := CopyIn(ctx, g, filepath.Join(host, "proj"), filepath.Join(guest, "nowhere/x"), CopyOptions{}); err == nil || !strings.Contains(err.Error(), "no such folder in the guest") {
		t.Errorf("into a missing folder: %v", err)
	}
	noLeftovers(t, guest)

	// And back out, to a folder and to a new name.
	back := t.TempDir()
	stats, err := CopyOut(ctx, g, filepath.Join(guest, "proj"), back, CopyOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if stats.Files != 2 || stats.Links != 1 {
		t.Errorf("stats %+v", stats)
	}
	if read(t, filepath.Join(back, "proj/src/main.go")) != "package main\n" {
		t.Error("main.go out")
	}
	if st, _ := os.Stat(filepath.Join(back, "proj/run.sh")); st.Mode().Perm() != 0o755 || !st.ModTime().Equal(when) {
		t.Errorf("run.sh out: %v %v", st.Mode(), st.ModTime())
	}
	if _, err := CopyOut(ctx, g, filepath.Join(guest, "renamed.sh"), filepath.Join(back, "r.sh"), CopyOptions{}); err != nil || read(t, filepath.Join(back, "r.sh")) != "#!/bin/sh\n" {
		t.Errorf("to a new name: %v", err)
	}
	if _, err := CopyOut(ctx, g, filepath.Join(guest, "proj"), back, CopyOptions{}); err == nil || !strings.Contains(err.Error(), "is a folder already") {
		t.Errorf("a second copy out: %v", err)
	}
	if _, err := CopyOut(ctx, g, filepath.Join(guest, "missing"), back, CopyOptions{}); err == nil || !strings.Contains(err.Error(), "no such file or folder in the guest") {
		t.Errorf("a missing source: %v", err)
	}
	noLeftovers(t, back)

	// A relative guest path starts in /workspace.
	CopyOut(ctx, g, "rel/x", back, CopyOptions{})
	if last := g.argv[len(g.argv)-1]; last[len(last)-1] != "/workspace/rel/x" {
		t.Errorf("relative path: %q", last)
	}
}

// noLeftovers fails if a copy left its temporary folder behind.
func noLeftovers(t *testing.T, dir string) {
	t.Helper()
	filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
		if d != nil && strings.HasPrefix(d.Name(), ".cowork-cp") {
			t.Errorf("left behind: %s", p)
		}
		return nil
	})
}

// A host file that cannot be read mid-copy: the guest gets a stream without
// its trailer and writes nothing, and the error names the host's problem.
func TestCopyInCutShortWritesNothing(t *testing.T) {
	needGNU(t)
	host, guest := t.TempDir(), t.TempDir()
	// A whole block: the stream is cut where GNU tar sees a whole one.
	write(t, filepath.Join(host, "d/a"), "first"+strings.Repeat(".", 512-5), 0o644)
	write(t, filepath.Join(host, "d/b"), "second", 0o644)
	// A file gone once Pack has listed its folder cuts it off after a
	// whole file.
	_, err := CopyIn(context.Background(), &shrinking{localGuest: &localGuest{}, path: filepath.Join(host, "d/b")}, filepath.Join(host, "d"), guest, CopyOptions{})
	if err == nil || !strings.Contains(err.Error(), "read "+filepath.Join(host, "d")) {
		t.Fatalf("a source that failed mid-copy: %v", err)
	}
	if ents, _ := os.ReadDir(guest); len(ents) != 0 {
		t.Errorf("the guest folder holds %v", ents)
	}
}

// shrinking removes a file once the first file's header passes on the way
// to the guest, before Pack can write more: Pack listed the folder before,
// and fails when it comes to the file, before its header.
type shrinking struct {
	*localGuest
	path string
}

func (s *shrinking) Exec(ctx context.Context, o agentclient.ExecOptions) (agentclient.ExitStatus, error) {
	o.Stdin = &removeOnRead{r: o.Stdin, path: s.path}
	return s.localGuest.Exec(ctx, o)
}

type removeOnRead struct {
	r    io.Reader
	path string
}

func (r *removeOnRead) Read(p []byte) (int, error) {
	n, err := r.r.Read(p)
	if bytes.Contains(p[:n], []byte("d/a\x00")) {
		os.Remove(r.path)
	}
	return n, err
}

// hostileGuest answers every exec with a stream it made up, and an exit.
type hostileGuest struct {
	out  func(w io.Writer)
	code int
}

func (h *hostileGuest) Exec(ctx context.Context, o agentclient.ExecOptions) (agentclient.ExitStatus, error) {
	h.out(o.Stdout)
	return agentclient.ExitStatus{Code: h.code}, nil
}

func TestCopyOutRefusesAHostileGuest(t *testing.T) {
	tarOf := func(hdrs ...*tar.Header) func(io.Writer) {
		return func(w io.Writer) {
			var b bytes.Buffer
			tw := tar.NewWriter(&b)
			for _, h := range hdrs {
				tw.WriteHeader(h)
				if h.Size > 0 {
					tw.Write(bytes.Repeat([]byte("x"), int(h.Size)))
				}
			}
			tw.Close()
			w.Write(b.Bytes())
		}
	}
	outside := t.TempDir()
	for _, tc := range []struct {
		name  string
		guest *hostileGuest
		want  string
	}{
		{"a path out of the copy", &hostileGuest{out: tarOf(&tar.Header{Name: "f/../../../" + filepath.Base(outside) + "/evil", Typeflag: tar.TypeReg, Size: 1, Mode: 0o644})}, "outside"},
		{"a link and a file through it", &hostileGuest{out: tarOf(
			&tar.Header{Name: "f/", Typeflag: tar.TypeDir, Mode: 0o755},
			&tar.Header{Name: "f/l", Typeflag: tar.TypeSymlink, Linkname: outside},
			&tar.Header{Name: "f/l/evil", Typeflag: tar.TypeReg, Size: 1, Mode: 0o644})}, "escapes"},
		{"a whole stream, then a failure", &hostileGuest{out: tarOf(&tar.Header{Name: "f", Typeflag: tar.TypeReg, Size: 1, Mode: 0o644}), code: 2}, "in the guest"},
		{"a stream without end after its end", &hostileGuest{out: func(w io.Writer) {
			tarOf(&tar.Header{Name: "f", Typeflag: tar.TypeReg, Size: 1, Mode: 0o644})(w)
			for {
				if _, err := w.Write(make([]byte, 64<<10)); err != nil {
					return
				}
			}
		}}, "after its stream's end"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dst := t.TempDir()
			_, err := CopyOut(context.Background(), tc.guest, "/guest/f", dst, CopyOptions{})
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %v, want an error with %q", err, tc.want)
			}
			if ents, _ := os.ReadDir(dst); len(ents) != 0 {
				t.Errorf("the destination holds %v", ents)
			}
			if ents, _ := os.ReadDir(outside); len(ents) != 0 {
				t.Errorf("outside holds %v", ents)
			}
		})
	}
}

// A link at DST, on either side, is followed only when DST ends in a
// slash: a link a guest planted (brought out by an earlier copy) does not
// send the next copy elsewhere.
func TestCopyFollowsALinkToAFolderOnlyWhenAsked(t *testing.T) {
	needGNU(t)
	ctx := context.Background()
	g := &localGuest{}
	host, guest, victim := t.TempDir(), t.TempDir(), t.TempDir()
	write(t, filepath.Join(guest, "new.txt"), "new", 0o644)
	os.Symlink(victim, filepath.Join(host, "results"))
	if _, err := CopyOut(ctx, g, filepath.Join(guest, "new.txt"), filepath.Join(host, "results"), CopyOptions{}); err == nil || !strings.Contains(err.Error(), "is a link to a folder: write") {
		t.Errorf("out onto a link to a folder: %v", err)
	}
	if _, err := CopyOut(ctx, g, filepath.Join(guest, "new.txt"), filepath.Join(host, "results")+"/", CopyOptions{}); err != nil || read(t, filepath.Join(victim, "new.txt")) != "new" {
		t.Errorf("out into a link to a folder, with a slash: %v", err)
	}
	os.Remove(filepath.Join(victim, "new.txt"))

	write(t, filepath.Join(host, "f"), "host", 0o644)
	os.Symlink(victim, filepath.Join(guest, "linkdir"))
	if _, err := CopyIn(ctx, g, filepath.Join(host, "f"), filepath.Join(guest, "linkdir"), CopyOptions{}); err == nil || !strings.Contains(err.Error(), "is a link to a folder in the guest") {
		t.Errorf("in onto a link to a folder: %v", err)
	}
	if _, err := CopyIn(ctx, g, filepath.Join(host, "f"), filepath.Join(guest, "linkdir")+"/", CopyOptions{}); err != nil || read(t, filepath.Join(victim, "f")) != "host" {
		t.Errorf("in into a link to a folder, with a slash: %v", err)
	}
	if l, _ := os.Readlink(filepath.Join(guest, "linkdir")); l != victim {
		t.Errorf("the guest's link became %q", l)
	}

	// A file onto a folder, and a folder onto a file, say which.
	os.Mkdir(filepath.Join(guest, "adir"), 0o755)
	write(t, filepath.Join(host, "adir"), "a file", 0o644)
	if _, err := CopyOut(ctx, g, filepath.Join(guest, "adir"), filepath.Join(host, "adir"), CopyOptions{}); err == nil || !strings.Contains(err.Error(), "is a file, and the copy is a folder") {
		t.Errorf("a folder onto a file: %v", err)
	}
}

// Names the shell or tar would change: a trailing newline, a backslash, a
// leading dash.
func TestCopyOutOfOddNames(t *testing.T) {
	needGNU(t)
	guest := t.TempDir()
	for _, name := range []string{"trailing\n", `back\nslash`, "-dash"} {
		write(t, filepath.Join(guest, name), "x:"+name, 0o644)
		out := filepath.Join(t.TempDir(), "out")
		if _, err := CopyOut(context.Background(), &localGuest{}, filepath.Join(guest, name), out, CopyOptions{}); err != nil {
			t.Errorf("%q: %v", name, err)
			continue
		}
		if got := read(t, out); got != "x:"+name {
			t.Errorf("%q: copied %q", name, got)
		}
	}
}

// stallingGuest sends a whole stream, then neither exits nor sends more.
type stallingGuest struct{}

func (stallingGuest) Exec(ctx context.Context, o agentclient.ExecOptions) (agentclient.ExitStatus, error) {
	var b bytes.Buffer
	tw := tar.NewWriter(&b)
	tw.WriteHeader(&tar.Header{Name: "f", Typeflag: tar.TypeReg, Mode: 0o644})
	tw.Close()
	o.Stdout.Write(b.Bytes())
	<-ctx.Done()
	return agentclient.ExitStatus{}, ctx.Err()
}

func TestCopyOutOfAGuestThatNeverExits(t *testing.T) {
	defer func(d time.Duration) { afterEndGrace = d }(afterEndGrace)
	afterEndGrace = 100 * time.Millisecond
	dst := t.TempDir()
	_, err := CopyOut(context.Background(), stallingGuest{}, "/guest/f", dst, CopyOptions{})
	if err == nil || !strings.Contains(err.Error(), "did not exit after its stream's end") {
		t.Fatalf("a guest that stalls after its stream: %v", err)
	}
	if ents, _ := os.ReadDir(dst); len(ents) != 0 {
		t.Errorf("the destination holds %v", ents)
	}
}

// virtiofs under Virtualization.framework refuses some chmod and chown
// calls with EPERM: tar then says so and exits 2, though every file
// arrived. The copy goes on, with the modes the share gave; any other
// error still fails it, with nothing written.
func TestCopyInWhereTheShareRefusesModes(t *testing.T) {
	needGNU(t)
	realTar, err := exec.LookPath("tar")
	if err != nil {
		t.Skip("no tar")
	}
	fake := t.TempDir()
	say := filepath.Join(fake, "say")
	os.WriteFile(filepath.Join(fake, "tar"), []byte(`#!/bin/sh
`+realTar+` "$@" || exit
case " $* " in *" -xpf "*) cat "`+say+`" >&2; exit 2;; esac
`), 0o755)
	t.Setenv("PATH", fake+string(os.PathListSeparator)+os.Getenv("PATH"))

	ctx := context.Background()
	g := &localGuest{}
	host := t.TempDir()
	write(t, filepath.Join(host, "proj/run.sh"), "#!/bin/sh\n", 0o755)

	os.WriteFile(say, []byte("tar: proj/run.sh: Cannot change mode to rwxr-xr-x: Operation not permitted\n"+
		"tar: proj: Cannot change ownership to uid 0, gid 0: Operation not permitted\n"+
		"tar: Exiting with failure status due to previous errors\n"), 0o644)
	guest := t.TempDir()
	if _, err := CopyIn(ctx, g, filepath.Join(host, "proj"), guest, CopyOptions{}); err != nil {
		t.Fatalf("a share that refuses modes: %v", err)
	}
	if read(t, filepath.Join(guest, "proj/run.sh")) != "#!/bin/sh\n" {
		t.Error("run.sh did not arrive")
	}
	noLeftovers(t, guest)
	stream := t.TempDir()
	var tarball bytes.Buffer
	tw := tar.NewWriter(&tarball)
	tw.WriteHeader(&tar.Header{Name: "a.txt", Mode: 0o4755, Size: 2})
	tw.Write([]byte("a\n"))
	tw.Close()
	archive := tarball.Bytes()
	if err := CopyInStream(ctx, g, bytes.NewReader(archive), stream, CopyOptions{}); err != nil {
		t.Fatalf("a stream into a share that refuses modes: %v", err)
	}

	// Any other error fails the copy, beside refused modes or alone, and
	// so does an EPERM that is not about a mode or an owner.
	for _, other := range []string{
		"tar: proj/run.sh: Cannot open: No space left on device\n",
		"tar: proj/run.sh: Cannot change mode to rwxr-xr-x: Operation not permitted\n" +
			"tar: proj/big: Wrote only 512 of 10240 bytes: No space left on device\n",
		"tar: proj/run.sh: Cannot utime: Operation not permitted\n",
	} {
		os.WriteFile(say, []byte(other+"tar: Exiting with failure status due to previous errors\n"), 0o644)
		guest = t.TempDir()
		if _, err := CopyIn(ctx, g, filepath.Join(host, "proj"), guest, CopyOptions{}); err == nil || !strings.Contains(err.Error(), "nothing was written") {
			t.Errorf("tar said %q: %v", other, err)
		}
		if _, err := os.Lstat(filepath.Join(guest, "proj")); err == nil {
			t.Errorf("tar said %q, yet the copy wrote proj", other)
		}
		last := other[strings.LastIndex(strings.TrimSuffix(other, "\n"), ": ")+2 : len(other)-1]
		if err := CopyInStream(ctx, g, bytes.NewReader(archive), stream, CopyOptions{}); err == nil || !strings.Contains(err.Error(), last) {
			t.Errorf("tar said %q in a stream: %v", other, err)
		}
	}
}
