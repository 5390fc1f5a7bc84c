package instance

import (
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"syscall"
)

// ErrRunning means another hostd holds the instance.
var ErrRunning = errors.New("instance is running")

// Lock is the instance's exclusive lock, held by its hostd for its whole
// life. The kernel drops it when the process dies, however it dies, so a
// lock is never stale.
type Lock struct{ f *os.File }

// TryLock takes the lock without waiting; ErrRunning if a hostd has it.
func TryLock(p Paths) (*Lock, error) {
	l, err := LockFile(p.LockFile(), false)
	if errors.Is(err, ErrLocked) {
		return nil, ErrRunning
	}
	return l, err
}

// ErrLocked is LockFile's answer when another process holds the lock.
var ErrLocked = errors.New("locked by another process")

// LockFile takes an exclusive flock on path (made 0600 if missing),
// waiting for it when wait is true, else ErrLocked when it is held.
func LockFile(path string, wait bool) (*Lock, error) {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return nil, err
	}
	how := syscall.LOCK_EX
	if !wait {
		how |= syscall.LOCK_NB
	}
	if err := syscall.Flock(int(f.Fd()), how); err != nil {
		f.Close()
		if errors.Is(err, syscall.EWOULDBLOCK) {
			return nil, ErrLocked
		}
		return nil, fmt.Errorf("lock %s: %w", path, err)
	}
	return &Lock{f: f}, nil
}

// File is the locked file, open for reading and writing.
func (l *Lock) File() *os.File { return l.f }

// Release drops the lock.
func (l *Lock) Release() { l.f.Close() }

// Held reports whether a live hostd holds the instance's lock.
func Held(p Paths) bool {
	f, err := os.OpenFile(p.LockFile(), os.O_RDWR, 0)
	if err != nil {
		return false
	}
	defer f.Close()
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_SH|syscall.LOCK_NB); err != nil {
		return errors.Is(err, syscall.EWOULDBLOCK)
	}
	_ = syscall.Flock(int(f.Fd()), syscall.LOCK_UN)
	return false
}

// WritePid records the running hostd's pid.
func WritePid(p Paths) error {
	return WriteFileAtomic(p.PidFile(), []byte(strconv.Itoa(os.Getpid())+"\n"), 0o600)
}

// ReadPid returns the pid in the pid file, or 0.
func ReadPid(p Paths) int {
	b, err := os.ReadFile(p.PidFile())
	if err != nil {
		return 0
	}
	pid, _ := strconv.Atoi(strings.TrimSpace(string(b)))
	return pid
}

// Stale is what a hostd that died without cleaning up left behind.
type Stale struct {
	Pid   int      // the dead hostd's pid, 0 if no pid file was left
	Files []string // what was removed
}

// CleanStale removes the pid file and sockets of a hostd that is gone. It
// takes the lock while it does, so it never races a hostd starting up;
// ErrRunning while a hostd holds the instance. With none of them there it
// takes nothing: a lock held for no reason would turn a hostd starting
// that moment away.
func CleanStale(p Paths) (*Stale, error) {
	if !leftovers(p) {
		return nil, nil
	}
	l, err := TryLock(p)
	if err != nil {
		return nil, err
	}
	defer l.Release()
	return l.CleanStale(p)
}

// leftovers says whether a hostd's pid file or sockets are there: a
// running hostd's, or a dead one's.
func leftovers(p Paths) bool {
	for _, f := range []string{p.PidFile(), p.HostdSock(), p.AgentSock()} {
		if _, err := os.Lstat(f); err == nil {
			return true
		}
	}
	return false
}

// DeadPid is the pid a hostd that died left in its pid file, 0 when there
// is none or that process still lives. It reads and changes nothing else:
// for a look (`cowork ls`) that must not take the lock (CleanStale does).
func DeadPid(p Paths) int {
	pid := ReadPid(p)
	if pid <= 0 || !errors.Is(syscall.Kill(pid, 0), syscall.ESRCH) {
		return 0
	}
	return pid
}

// CleanStale is CleanStale for the lock's holder: what it finds can only
// be a dead hostd's.
func (l *Lock) CleanStale(p Paths) (*Stale, error) {
	s := &Stale{Pid: ReadPid(p)}
	for _, f := range []string{p.PidFile(), p.HostdSock(), p.AgentSock()} {
		if err := os.Remove(f); err == nil {
			s.Files = append(s.Files, f)
		} else if !errors.Is(err, os.ErrNotExist) {
			return s, err
		}
	}
	if err := os.RemoveAll(p.Run()); err != nil {
		return s, err
	}
	if len(s.Files) == 0 {
		return nil, nil
	}
	return s, nil
}
