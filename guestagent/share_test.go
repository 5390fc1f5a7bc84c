package guestagent

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/coworkhq/cowork/internal/agentcall"
)

// fakeShare is a Server whose share calls see a fake /proc and record
// what they do instead of doing it.
type fakeShare struct {
	*fakeProc
	s *Server

	mu       sync.Mutex
	syncs    int
	unmounts []bool // force of each unmount
	mkdirs   []string
}

func newFakeShare(t *testing.T) *fakeShare {
	f := &fakeShare{fakeProc: newFakeProc(t), s: New(Options{Logger: slog.New(slog.DiscardHandler)})}
	f.s.share = shareSys{
		procRoot:   f.root,
		self:       1,
		sync:       func() { f.mu.Lock(); f.syncs++; f.mu.Unlock() },
		unmount:    func(string, bool) error { t.Error("an unmount not expected"); return nil },
		mount:      func(string, string, bool) error { t.Error("a mount not expected"); return nil },
		mkdir:      func(dir string) error { f.mu.Lock(); f.mkdirs = append(f.mkdirs, dir); f.mu.Unlock(); return nil },
		retryEvery: time.Millisecond,
		retryFor:   time.Hour,
	}
	return f
}

// onUnmount makes unmount record its force and answer err.
func (f *fakeShare) onUnmount(err error) {
	f.s.share.unmount = func(dir string, force bool) error {
		f.mu.Lock()
		defer f.mu.Unlock()
		f.unmounts = append(f.unmounts, force)
		return err
	}
}

func release(t *testing.T, s *Server, path string, force bool) agentcall.Reply {
	t.Helper()
	b, _ := agentcall.AppendLine(nil, agentcall.Request{Method: agentcall.MethodShareRelease, Path: path, Force: force})
	reps := ask(t, s, string(b))
	if len(reps) != 1 {
		t.Fatalf("%d replies: %+v", len(reps), reps)
	}
	return reps[0]
}

func mountCall(t *testing.T, s *Server, tag, path string) agentcall.Reply {
	t.Helper()
	b, _ := agentcall.AppendLine(nil, agentcall.Request{Method: agentcall.MethodShareMount, Tag: tag, Path: path})
	reps := ask(t, s, string(b))
	if len(reps) != 1 {
		t.Fatalf("%d replies: %+v", len(reps), reps)
	}
	return reps[0]
}

// Nothing mounted: the release is done already, and nothing is touched.
func TestShareReleaseNotMounted(t *testing.T) {
	f := newFakeShare(t)
	f.mountinfo(ws2Mount) // a prefix is no mount
	f.proc(10, "bash", map[string]string{"cwd": "/workspace"})
	rep := release(t, f.s, "/workspace", false)
	if r := rep.ShareRelease; r == nil || !r.Unmounted || !r.NotMounted || len(r.Users) != 0 || f.syncs != 0 {
		t.Errorf("reply %+v (%+v), %d syncs", rep, rep.ShareRelease, f.syncs)
	}
}

// In use and not forced: the users are named and nothing is done; forced:
// synced, then detached lazily, and the users still named.
func TestShareReleaseInUse(t *testing.T) {
	f := newFakeShare(t)
	f.mountinfo(wsMount, ws2Mount)
	f.proc(10, "bash", map[string]string{"cwd": "/workspace/src"})
	f.proc(11, "other", map[string]string{"cwd": "/workspace2"})
	f.onUnmount(nil)
	rep := release(t, f.s, "/workspace", false)
	want := []agentcall.ShareUser{{PID: 10, Comm: "bash"}}
	if r := rep.ShareRelease; r == nil || r.Unmounted || r.NotMounted || len(r.Users) != 1 || r.Users[0] != want[0] || rep.Error != "" {
		t.Fatalf("not forced: %+v (%+v)", rep, rep.ShareRelease)
	}
	if len(f.unmounts) != 0 || f.syncs != 0 {
		t.Fatalf("not forced: %d unmounts, %d syncs", len(f.unmounts), f.syncs)
	}
	rep = release(t, f.s, "/workspace", true)
	if r := rep.ShareRelease; r == nil || !r.Unmounted || r.NotMounted || len(r.Users) != 1 || r.Users[0] != want[0] {
		t.Fatalf("forced: %+v (%+v)", rep, rep.ShareRelease)
	}
	if len(f.unmounts) != 1 || !f.unmounts[0] || f.syncs != 1 {
		t.Errorf("forced: unmounts %v, %d syncs; want one lazy unmount after a sync", f.unmounts, f.syncs)
	}
}

// Not in use: a plain unmount after a sync.
func TestShareReleaseFree(t *testing.T) {
	f := newFakeShare(t)
	f.mountinfo(wsMount)
	f.proc(1, "agent", map[string]string{"cwd": "/workspace"}) // the agent itself
	f.proc(11, "other", map[string]string{"cwd": "/workspace2"})
	f.onUnmount(nil)
	rep := release(t, f.s, "/workspace", false)
	if r := rep.ShareRelease; r == nil || !r.Unmounted || len(r.Users) != 0 || len(f.unmounts) != 1 || f.unmounts[0] || f.syncs != 1 {
		t.Errorf("reply %+v (%+v), unmounts %v, %d syncs", rep, rep.ShareRelease, f.unmounts, f.syncs)
	}
}

// A busy share is refused with what holds it, as far as the agent sees;
// a share unmounted under the agent's feet is released.
func TestShareReleaseUnmountFails(t *testing.T) {
	f := newFakeShare(t)
	f.mountinfo(wsMount)
	f.onUnmount(syscall.EBUSY)
	rep := release(t, f.s, "/workspace", false)
	if rep.Kind != agentcall.KindFailed || !strings.Contains(rep.Error, "cannot see") {
		t.Errorf("busy, holder unknown: %+v", rep)
	}
	f.mountinfo(wsMount, "39 36 0:48 / /workspace/sub rw - tmpfs tmpfs rw")
	rep = release(t, f.s, "/workspace", false)
	if rep.Kind != agentcall.KindFailed || !strings.Contains(rep.Error, `a mount under it at "/workspace/sub"`) {
		t.Errorf("busy, a mount below: %+v", rep)
	}
	f.s.share.unmount = func(string, bool) error { // a process came in since the look
		f.proc(50, "late", map[string]string{"cwd": "/workspace"})
		return syscall.EBUSY
	}
	rep = release(t, f.s, "/workspace", false)
	if rep.Kind != agentcall.KindFailed || !strings.Contains(rep.Error, `held by "late" (pid 50)`) || !strings.Contains(rep.Error, "force") {
		t.Errorf("busy, a late user: %+v", rep)
	}
	f.mountinfo("1 1 0:1 / /tmp2 rw - tmpfs tmpfs rw")
	f.s.share.unmount = func(string, bool) error { f.mountinfo(); return syscall.EINVAL }
	rep = release(t, f.s, "/tmp2", false)
	if r := rep.ShareRelease; r == nil || !r.Unmounted || r.NotMounted {
		t.Errorf("unmounted by someone else: %+v (%+v)", rep, r)
	}
	f.mountinfo("1 1 0:1 / /tmp2 rw - tmpfs tmpfs rw")
	f.s.share.unmount = func(string, bool) error { return syscall.EINVAL }
	rep = release(t, f.s, "/tmp2", false)
	if rep.Kind != agentcall.KindFailed || !strings.Contains(rep.Error, "invalid argument") {
		t.Errorf("EINVAL and still mounted: %+v", rep)
	}
	f.s.share.unmount = func(string, bool) error { return syscall.EPERM }
	rep = release(t, f.s, "/tmp2", false)
	if rep.Kind != agentcall.KindFailed || !strings.Contains(rep.Error, "unmount /tmp2: operation not permitted") {
		t.Errorf("EPERM: %+v", rep)
	}
}

// What is no mount point, or no tag, is refused before anything is done.
func TestShareCallsValidate(t *testing.T) {
	f := newFakeShare(t)
	f.mountinfo(wsMount)
	for _, p := range []string{"", "workspace", "./workspace", "/workspace/", "/workspace/../etc", "//workspace", "/work//space", "/",
		"/work\x00space", "/" + strings.Repeat("a", 5000)} {
		if rep := release(t, f.s, p, true); rep.Kind != agentcall.KindInvalid || len(rep.Error) > 300 {
			t.Errorf("release %q: %+v", p, rep)
		}
		if rep := mountCall(t, f.s, "workspace", p); rep.Kind != agentcall.KindInvalid || len(rep.Error) > 300 {
			t.Errorf("mount at %q: %+v", p, rep)
		}
	}
	for _, tag := range []string{"", "a,b", "a b", "a\tb", "a\nb", "a\x00b", "a\x7fb", "a\u00a0b", strings.Repeat("t", 37)} {
		if rep := mountCall(t, f.s, tag, "/workspace"); rep.Kind != agentcall.KindInvalid {
			t.Errorf("tag %q: %+v", tag, rep)
		}
	}
	if len(f.mkdirs) != 0 || f.syncs != 0 {
		t.Errorf("something was done: mkdirs %v, %d syncs", f.mkdirs, f.syncs)
	}
	if err := checkShareTag("a\xffb"); err == nil { // JSON cannot carry it; a direct caller could
		t.Error("a tag that is not UTF-8 passes")
	}
	for _, tag := range []string{"workspace", strings.Repeat("t", 36), "tag-ü_1.x"} {
		if err := checkShareTag(tag); err != nil {
			t.Errorf("tag %q refused: %v", tag, err)
		}
	}
	for _, p := range []string{"/workspace", "/a", "/home/u/my work"} {
		if err := checkSharePath("x", p); err != nil {
			t.Errorf("path %q refused: %v", p, err)
		}
	}
}

// A mount is tried again while the device's tag is missing, and until it
// is there; another error ends it at once.
func TestShareMountRetries(t *testing.T) {
	f := newFakeShare(t)
	f.mountinfo(ws2Mount)
	answers := []error{syscall.ENODEV, syscall.EINVAL, syscall.ENXIO, syscall.ENOENT, syscall.EAGAIN, nil}
	var calls []string
	f.s.share.mount = func(tag, dir string, _ bool) error {
		calls = append(calls, tag+" "+dir)
		err := answers[0]
		answers = answers[1:]
		return err
	}
	if rep := mountCall(t, f.s, "workspace", "/workspace"); rep.ShareMount == nil || rep.Error != "" {
		t.Fatalf("reply %+v", rep)
	}
	if len(calls) != 6 || calls[5] != "workspace /workspace" || len(f.mkdirs) != 1 || f.mkdirs[0] != "/workspace" {
		t.Errorf("mounts %q, mkdirs %q", calls, f.mkdirs)
	}

	calls = nil
	answers = []error{syscall.EPERM}
	if rep := mountCall(t, f.s, "workspace", "/workspace"); rep.Kind != agentcall.KindFailed || !strings.Contains(rep.Error, "operation not permitted") || len(calls) != 1 {
		t.Errorf("EPERM: %+v after %d mounts", rep, len(calls))
	}

	f.s.share.retryFor = 20 * time.Millisecond
	n := 0
	f.s.share.mount = func(string, string, bool) error { n++; return syscall.ENXIO }
	rep := mountCall(t, f.s, "workspace", "/workspace")
	if rep.Kind != agentcall.KindFailed || !strings.Contains(rep.Error, "did not appear") || !strings.Contains(rep.Error, "no such device or address") || n < 2 {
		t.Errorf("never there: %+v after %d mounts", rep, n)
	}

	f.s.share.mkdir = func(string) error { return syscall.EROFS }
	if rep := mountCall(t, f.s, "workspace", "/workspace"); rep.Kind != agentcall.KindFailed || !strings.Contains(rep.Error, "make the mount point") {
		t.Errorf("mkdir fails: %+v", rep)
	}
}

// The tag already mounted there is a mount done; anything else mounted
// there is refused, not mounted over.
func TestShareMountAlreadyMounted(t *testing.T) {
	f := newFakeShare(t)
	f.mountinfo(wsMount)
	if rep := mountCall(t, f.s, "workspace", "/workspace"); rep.ShareMount == nil {
		t.Errorf("mounted already: %+v", rep)
	}
	if rep := mountCall(t, f.s, "other", "/workspace"); rep.Kind != agentcall.KindFailed || !strings.Contains(rep.Error, `virtiofs" mount of "workspace`) {
		t.Errorf("another tag there: %+v", rep)
	}
	f.mountinfo(ws2Mount)
	if rep := mountCall(t, f.s, "workspace", "/workspace2"); rep.Kind != agentcall.KindFailed || !strings.Contains(rep.Error, "release it first") {
		t.Errorf("a tmpfs there: %+v", rep)
	}
	if len(f.mkdirs) != 0 {
		t.Errorf("mkdirs %q", f.mkdirs)
	}
}

// A host that gives up and closes the call stops the agent's waiting.
func TestShareMountStopsWhenTheHostLeaves(t *testing.T) {
	f := newFakeShare(t)
	tried := make(chan struct{}, 1)
	f.s.share.mount = func(string, string, bool) error {
		select {
		case tried <- struct{}{}:
		default:
		}
		return syscall.ENODEV
	}
	c, done := serveCall(t, f.s)
	b, _ := agentcall.AppendLine(nil, agentcall.Request{Method: agentcall.MethodShareMount, Tag: "workspace", Path: "/workspace"})
	go c.Write(b)
	select {
	case <-tried:
	case <-time.After(time.Minute):
		t.Fatal("no mount tried")
	}
	c.Close()
	select {
	case <-done:
	case <-time.After(time.Minute):
		t.Fatal("the agent went on waiting for the device after the host left")
	}
	// And the loop itself ends on its context.
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	err := f.s.shareMount(ctx, "workspace", "/workspace", false)
	var r *refusal
	if !errors.As(err, &r) || !strings.Contains(err.Error(), "stopped waiting") {
		t.Errorf("a canceled mount: %v", err)
	}
}

// A read-only share is mounted read-only; another, as it comes.
func TestShareMountReadOnly(t *testing.T) {
	f := newFakeShare(t)
	f.mountinfo(ws2Mount)
	var got []string
	f.s.share.mount = func(tag, dir string, ro bool) error {
		got = append(got, fmt.Sprintf("%s %s %t", tag, dir, ro))
		return nil
	}
	for _, ro := range []bool{true, false} {
		b, _ := agentcall.AppendLine(nil, agentcall.Request{Method: agentcall.MethodShareMount, Tag: "mount1", Path: "/data", ReadOnly: ro})
		if reps := ask(t, f.s, string(b)); len(reps) != 1 || reps[0].ShareMount == nil {
			t.Fatalf("read-only %t: replies %+v", ro, reps)
		}
	}
	if want := []string{"mount1 /data true", "mount1 /data false"}; !slices.Equal(got, want) {
		t.Errorf("mounts %q, want %q", got, want)
	}
}

// A mount waiting for its device tries again soon at first, then less
// often: a resume waits on the first tries, a missing device on the rest.
func TestShareMountRetriesSoonThenLess(t *testing.T) {
	var waits []time.Duration
	for w, i := 5*time.Millisecond, 0; i < 8; i++ {
		waits = append(waits, w)
		w = nextRetry(w, 5*time.Millisecond)
	}
	want := []time.Duration{5, 10, 20, 40, 80, 100, 100, 100}
	for i := range want {
		if waits[i] != want[i]*time.Millisecond {
			t.Fatalf("waits %v, want %v ms", waits, want)
		}
	}
	if got := nextRetry(time.Second, time.Second); got != time.Second {
		t.Errorf("a first wait over the cap stays: %v", got)
	}
}
