package guestagent

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/coworkhq/cowork/internal/agentcall"
)

// The share calls let hostd suspend a guest whose /workspace is a virtiofs
// share: QEMU 7.2 cannot save a guest with the share's device attached,
// and the device goes only once the guest has let go of the mount
// (ShareRelease); after the resume a new device is plugged in and the
// guest mounts it again (ShareMount).

// shareSys is what the share calls do to the guest; tests replace it.
type shareSys struct {
	procRoot   string // the /proc tree: users and mountinfo (self/mountinfo)
	self       int    // the agent's own pid, never a user of the share
	sync       func() // flushes every filesystem (sync(2))
	unmount    func(dir string, force bool) error
	mount      func(tag, dir string, readOnly bool) error // mounts the virtiofs tag at dir
	mkdir      func(dir string) error
	retryEvery time.Duration        // first wait between mounts of a tag not there yet; it doubles up to maxRetryEvery
	retryFor   time.Duration        // how long a mount is retried
	beforePid  func(pid int)        // called before a process is looked at (tests)
	eject      func() (int, error)  // hands the unmounted devices back (shareSlots.eject)
	rescan     func() (bool, error) // looks for devices plugged in since (shareSlots.rescan)
}

func realShareSys() shareSys {
	slots := realShareSlots()
	return shareSys{
		procRoot:   "/proc",
		self:       os.Getpid(),
		sync:       syncAll,
		unmount:    unmountShare,
		mount:      mountVirtiofs,
		mkdir:      func(dir string) error { return os.MkdirAll(dir, 0o755) },
		retryEvery: 5 * time.Millisecond,
		retryFor:   agentcall.ShareMountWait,
		eject:      slots.eject,
		rescan:     slots.rescan,
	}
}

// maxRetryEvery is the longest wait between two mounts of a tag that is
// not there yet.
const maxRetryEvery = 100 * time.Millisecond

// nextRetry is the wait after wait, for a mount whose first wait was
// first: twice as long, up to maxRetryEvery (or first, if longer).
func nextRetry(wait, first time.Duration) time.Duration {
	return min(2*wait, max(first, maxRetryEvery))
}

// maxTagBytes is virtiofs's limit on a tag (the device's config space).
const maxTagBytes = 36

// checkSharePath refuses a mount point that is not an absolute, clean
// path other than "/": the agent unmounts and mounts exactly what the host
// names, and a path the kernel would read otherwise must not get that far.
func checkSharePath(method, dir string) error {
	switch {
	case dir == "":
		return refusef(agentcall.KindInvalid, "%s: no path given", method)
	case len(dir) > 4095 || strings.ContainsRune(dir, 0):
		return refusef(agentcall.KindInvalid, "%s: path %s is no path a mount can have", method, quoteShort(dir))
	case !filepath.IsAbs(dir) || filepath.Clean(dir) != dir:
		return refusef(agentcall.KindInvalid, "%s: path %s is not absolute and clean; give the mount point as /workspace is given", method, quoteShort(dir))
	case dir == "/":
		return refusef(agentcall.KindInvalid, "%s: the root directory is no share", method)
	}
	return nil
}

// checkShareTag refuses a tag virtiofs cannot have, or one that would
// read as more than a tag: no comma (mount options), no space or control
// character, at most maxTagBytes bytes of UTF-8.
func checkShareTag(tag string) error {
	switch {
	case tag == "":
		return refusef(agentcall.KindInvalid, "share_mount: no tag given")
	case len(tag) > maxTagBytes:
		return refusef(agentcall.KindInvalid, "share_mount: tag %s is over %d bytes, virtiofs's limit", quoteShort(tag), maxTagBytes)
	case !utf8.ValidString(tag) || strings.ContainsFunc(tag, func(r rune) bool { return r == ',' || unicode.IsSpace(r) || unicode.IsControl(r) }):
		return refusef(agentcall.KindInvalid, "share_mount: tag %s holds a comma, a space or a control character; a virtiofs tag is one word", quoteShort(tag))
	}
	return nil
}

// shareRelease lets go of the share mounted at dir: it lists the
// processes that use it and, unless there are some and force is false,
// syncs and unmounts it (lazily with force: the users keep what they hold
// open, and lose it when the device goes). Nothing mounted at dir is a
// release already done.
func (s *Server) shareRelease(dir string, force bool) (*agentcall.ShareReleaseReply, error) {
	const method = string(agentcall.MethodShareRelease)
	if err := checkSharePath(method, dir); err != nil {
		return nil, err
	}
	sh := &s.share
	look, err := lookMounts(s.mountinfo(), dir)
	if err != nil {
		return nil, refusef(agentcall.KindFailed, "%s: read the mount table: %v", method, err)
	}
	if !look.mounted {
		return &agentcall.ShareReleaseReply{Unmounted: true, NotMounted: true}, nil
	}
	users, more := shareUsers(sh.procRoot, dir, sh.self, sh.beforePid)
	rep := &agentcall.ShareReleaseReply{Users: users, More: more}
	if len(users) > 0 && !force {
		s.log.Info("share release refused: in use", "path", dir, "users", len(users)+more)
		return rep, nil
	}
	sh.sync()
	if err := sh.unmount(dir, force); err != nil {
		if errors.Is(err, syscall.EINVAL) {
			// Not a mount point: unmounted since the look, by someone else.
			if look, lerr := lookMounts(s.mountinfo(), dir); lerr == nil && !look.mounted {
				rep.Unmounted = true
				return rep, nil
			}
		}
		if errors.Is(err, syscall.EBUSY) {
			return nil, refusef(agentcall.KindFailed, "%s: %s is busy, held by %s; stop what uses it, or release it with force (its users lose it)",
				method, dir, s.shareHolders(dir))
		}
		return nil, refusef(agentcall.KindFailed, "%s: unmount %s: %v", method, dir, err)
	}
	rep.Unmounted = true
	s.log.Info("share released", "path", dir, "force", force, "users", len(users)+more)
	return rep, nil
}

// shareHolders says what keeps the share at dir busy, as far as the agent
// can see: its users, else a mount under it, else what it cannot see.
func (s *Server) shareHolders(dir string) string {
	users, more := shareUsers(s.share.procRoot, dir, s.share.self, nil)
	if len(users) > 0 {
		words := make([]string, 0, len(users)+1)
		for _, u := range users {
			words = append(words, fmt.Sprintf("%q (pid %d)", u.Comm, u.PID))
		}
		if more > 0 {
			words = append(words, fmt.Sprintf("%d more", more))
		}
		return strings.Join(words, ", ")
	}
	if look, err := lookMounts(s.mountinfo(), dir); err == nil && look.below != "" {
		return "a mount under it at " + quoteShort(look.below)
	}
	return "something the agent cannot see (a thread's working directory, or a process in another mount namespace)"
}

func (s *Server) mountinfo() string {
	return filepath.Join(s.share.procRoot, "self", "mountinfo")
}

// shareMount mounts the virtiofs tag at dir, read-only when readOnly,
// making dir if it is missing.
// A share device plugged in a moment ago shows its tag a little later, so
// a mount that fails for want of it is tried again, soon at first (a
// resume waits on this mount; a failed mount costs the kernel little),
// then every maxRetryEvery, for retryFor or until ctx ends (the host
// left). The tag already mounted there is a mount already done.
func (s *Server) shareMount(ctx context.Context, tag, dir string, readOnly bool) error {
	const method = string(agentcall.MethodShareMount)
	if err := checkShareTag(tag); err != nil {
		return err
	}
	if err := checkSharePath(method, dir); err != nil {
		return err
	}
	sh := &s.share
	look, err := lookMounts(s.mountinfo(), dir)
	if err != nil {
		return refusef(agentcall.KindFailed, "%s: read the mount table: %v", method, err)
	}
	if look.mounted {
		if look.top.fstype == "virtiofs" && look.top.source == tag {
			return nil
		}
		return refusef(agentcall.KindFailed, "%s: %s already has a %s mount of %s on it; release it first",
			method, dir, quoteShort(look.top.fstype), quoteShort(look.top.source))
	}
	if err := sh.mkdir(dir); err != nil {
		return refusef(agentcall.KindFailed, "%s: make the mount point: %v", method, err)
	}
	deadline := time.Now().Add(sh.retryFor)
	wait := sh.retryEvery
	for tries := 1; ; tries++ {
		err := sh.mount(tag, dir, readOnly)
		if err != nil && tagMissing(err) && sh.rescan != nil {
			// A device plugged into a slot pciehp no longer drives (after
			// a ShareEject) shows its tag once its port is rescanned.
			looked, rerr := sh.rescan()
			if rerr != nil {
				s.log.Warn("rescan the share slots", "err", rerr)
			}
			if looked {
				err = sh.mount(tag, dir, readOnly)
			}
		}
		switch {
		case err == nil:
			s.log.Info("share mounted", "tag", tag, "path", dir, "read_only", readOnly, "tries", tries)
			return nil
		case !tagMissing(err):
			return refusef(agentcall.KindFailed, "%s: mount virtiofs %s at %s: %v", method, quoteShort(tag), dir, err)
		case !time.Now().Before(deadline):
			return refusef(agentcall.KindFailed, "%s: virtiofs tag %s did not appear within %v (last error: %v); check that the share's device is attached",
				method, quoteShort(tag), sh.retryFor, err)
		}
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return refusef(agentcall.KindFailed, "%s: the host stopped waiting (last error: %v)", method, err)
		case <-t.C:
		}
		wait = nextRetry(wait, sh.retryEvery)
	}
}

// tagMissing reports whether a mount failed for want of the device: the
// kernel answers EINVAL for a tag no virtiofs device has (yet), ENODEV
// while the virtiofs driver is not loaded, and ENOENT or ENXIO while a
// device is half there.
func tagMissing(err error) bool {
	for _, e := range []syscall.Errno{syscall.EINVAL, syscall.ENODEV, syscall.ENOENT, syscall.ENXIO, syscall.EAGAIN} {
		if errors.Is(err, e) {
			return true
		}
	}
	return false
}

// shareEject hands the host every virtiofs device, all unmounted (the
// host released each share first): see shareSlots. One still mounted is
// refused, nothing done: its users would lose it.
func (s *Server) shareEject() (*agentcall.ShareEjectReply, error) {
	const method = string(agentcall.MethodShareEject)
	point, err := virtiofsMounted(s.mountinfo())
	if err != nil {
		return nil, refusef(agentcall.KindFailed, "%s: read the mount table: %v", method, err)
	}
	if point != "" {
		return nil, refusef(agentcall.KindFailed, "%s: a virtiofs share is still mounted at %s; release it first", method, quoteShort(point))
	}
	n, err := s.share.eject()
	if err != nil {
		return nil, refusef(agentcall.KindFailed, "%s: %v (%d ejected)", method, err, n)
	}
	s.log.Info("shares ejected", "devices", n)
	return &agentcall.ShareEjectReply{Ejected: n}, nil
}
