// Package rotlog is a log file that cannot fill the disk: it is rotated by
// size (path becomes path.1, path.1 path.2, and so on up to Keep files),
// so at most (Keep+1)×MaxSize bytes are ever on disk for it.
//
// cowork's logs are fed by the guest (its console, and hostd's warnings
// about what it does); a guest printing forever must cost a bounded amount
// of disk. The rotated files have fixed names, which the readers of a log
// (the stop reason, `cowork start`'s failure tail, the e2e tests) rely on;
// and a log whose file is also a process's stdout and stderr (hostd.log,
// where Go writes a panic) is reopened on those descriptors at each
// rotation (Options.OnOpen). gopkg.in/natefinch/lumberjack.v2 does neither
// (its rotated files are named by time, and it has no hook for the
// descriptors), hence this small writer.
package rotlog

import (
	"errors"
	"fmt"
	"io"
	"os"
	"sync"
	"syscall"
)

// Options say how big a log grows and what is kept of it.
type Options struct {
	// MaxSize is the most bytes one file holds: a write that would take
	// it past MaxSize goes to a fresh file (one longer than MaxSize is
	// split).
	MaxSize int64
	// Keep is how many rotated files are kept: path.1 (the newest) to
	// path.Keep. 0 keeps none.
	Keep int
	// Fresh starts a new file at Open when path holds something already,
	// so each run has a file of its own (the last run's is path.1).
	Fresh bool
	// OnOpen, when set, is called with each file the log opens, the first
	// included, before anything is written to it; an error fails the Open
	// or the write that rotated.
	OnOpen func(*os.File) error
	// SyncRotated keeps each file a rotation moves aside open until the
	// next Sync, which then commits it to disk with the current one: a
	// writer that must know its lines are on disk before it says so
	// elsewhere (the audit log, before its anchor) calls Sync, and a
	// rotation in between loses nothing. At most Keep such files stay
	// open (an older one is gone from the disk anyway).
	SyncRotated bool
	// RotationLock, when set, is a file the log holds an exclusive flock
	// on while it rotates (made if missing): a reader that takes it shared
	// sees the files as they are between rotations, never a gap a
	// rotation shows for a moment (see audit.Verify).
	RotationLock string
}

// File is a size-capped, rotated log file. It is safe for concurrent use.
type File struct {
	path string
	o    Options

	mu sync.Mutex
	// f is the current file: nil once closed, or after a rotation that
	// could not open the next one (ready opens it again).
	f      *os.File
	closed bool
	// written is the current file's size as this File wrote it. It is the
	// size unless OnOpen handed the file to other writers: then size reads
	// the file's own (fstat), which costs a system call a write.
	written int64
	// rotated are the files rotated since the last Sync (SyncRotated).
	rotated []*os.File
}

var _ io.WriteCloser = (*File)(nil)

// Open appends to the log at path (a fresh file with o.Fresh).
func Open(path string, o Options) (*File, error) {
	if o.MaxSize <= 0 {
		return nil, fmt.Errorf("log %s: MaxSize %d must be positive", path, o.MaxSize)
	}
	l := &File{path: path, o: o}
	if o.RotationLock != "" { // there before any rotation, for readers to take
		if f, err := os.OpenFile(o.RotationLock, os.O_CREATE|os.O_RDONLY, 0o600); err == nil {
			f.Close()
		}
	}
	st, err := os.Stat(path)
	switch {
	case err == nil && (o.Fresh && st.Size() > 0 || st.Size() >= o.MaxSize):
		err = l.rotate()
	case err == nil || errors.Is(err, os.ErrNotExist):
		err = l.open(false)
	}
	if err != nil {
		return nil, err
	}
	return l, nil
}

// Name is the path of the current file.
func (l *File) Name() string { return l.path }

// Write appends p, rotating first when p would take the file past MaxSize.
// With OnOpen, the size is the file's own (fstat), so writes through
// another descriptor of it (a process's stderr) count too.
func (l *File) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if err := l.ready(); err != nil {
		return 0, err
	}
	written := 0
	for len(p) > 0 {
		size, err := l.size()
		if err != nil {
			return written, err
		}
		if size > 0 && size+int64(len(p)) > l.o.MaxSize {
			if err := l.rotate(); err != nil {
				return written, err
			}
			size = 0
		}
		chunk := p[:min(int64(len(p)), l.o.MaxSize-size)]
		n, err := l.f.Write(chunk)
		l.written += int64(n)
		written += n
		p = p[n:]
		if err != nil {
			return written, err
		}
	}
	return written, nil
}

// StartsFile says whether a write of n bytes would be the first in a
// file: the current one is empty, or the write would rotate it. A writer
// whose records chain across files (the audit log) marks the first
// record of each file, so the file can be checked on its own once the
// files before it are rotated away. Only a writer that makes every write
// itself, under its own lock, gets an answer that holds for its next write.
func (l *File) StartsFile(n int) (bool, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if err := l.ready(); err != nil {
		return false, err
	}
	size, err := l.size()
	if err != nil {
		return false, err
	}
	return size == 0 || size+int64(n) > l.o.MaxSize, nil
}

// Size is the current file's size.
func (l *File) Size() (int64, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if err := l.ready(); err != nil {
		return 0, err
	}
	return l.size()
}

// Sync commits to disk what was written so far: the current file and,
// with SyncRotated, the files rotated since the last Sync. The disk's
// work is done without the lock: writes go on meanwhile (what they add
// may or may not be committed).
func (l *File) Sync() error {
	l.mu.Lock()
	if err := l.ready(); err != nil {
		l.mu.Unlock()
		return err
	}
	f, rotated := l.f, l.rotated
	l.rotated = nil
	l.mu.Unlock()
	var errs []error
	for _, r := range rotated {
		errs = append(errs, r.Sync(), r.Close())
	}
	// A rotation meanwhile moves f aside: into rotated with SyncRotated
	// (the next Sync commits it again), else closed, unsynced.
	errs = append(errs, f.Sync())
	return errors.Join(errs...)
}

// Check rotates the file when it has grown to MaxSize or past it through
// writes that did not go through Write (another descriptor of the file).
func (l *File) Check() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if err := l.ready(); err != nil {
		return err
	}
	size, err := l.size()
	if err != nil || size < l.o.MaxSize {
		return err
	}
	return l.rotate()
}

// Close closes the current file; writes fail after it.
func (l *File) Close() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return nil
	}
	l.closed = true
	var err error
	if l.f != nil {
		err = l.f.Close()
	}
	l.f = nil
	for _, r := range l.rotated {
		r.Close()
	}
	l.rotated = nil
	return err
}

func (l *File) size() (int64, error) {
	if l.o.OnOpen == nil {
		return l.written, nil
	}
	st, err := l.f.Stat()
	if err != nil {
		return 0, err
	}
	return st.Size(), nil
}

// rotate shifts the kept files up by one and opens a fresh file. The new
// file is opened truncating: should the current one not move aside (a
// rename failed, or Keep is 0), it is emptied, so the bound holds anyway.
func (l *File) rotate() error {
	if l.o.RotationLock != "" {
		if lock, err := os.OpenFile(l.o.RotationLock, os.O_CREATE|os.O_RDWR, 0o600); err == nil {
			// Unlocked, then closed, in one go: an unlock deferred apart
			// ran after the close, on a descriptor number another
			// goroutine may have opened since, and a close alone leaves
			// the lock to a child forked meanwhile until it execs.
			syscall.Flock(int(lock.Fd()), syscall.LOCK_EX)
			defer func() {
				syscall.Flock(int(lock.Fd()), syscall.LOCK_UN)
				lock.Close()
			}()
		} // without it, a reader falls back on waiting a gap out
	}
	if l.f != nil {
		if l.o.SyncRotated && l.o.Keep > 0 {
			l.rotated = append(l.rotated, l.f)
			if len(l.rotated) > l.o.Keep {
				l.rotated[0].Close()
				l.rotated = l.rotated[1:]
			}
		} else {
			l.f.Close()
		}
		l.f = nil
	}
	for i := l.o.Keep - 1; i >= 1; i-- {
		_ = os.Rename(fmt.Sprintf("%s.%d", l.path, i), fmt.Sprintf("%s.%d", l.path, i+1))
	}
	if l.o.Keep > 0 {
		_ = os.Rename(l.path, l.path+".1")
	}
	return l.open(true)
}

// ready opens the file again after a rotation could not (a full disk, a
// folder gone for a while): the log stays broken only while the cause
// lasts, not until it is opened anew. A closed log stays closed.
func (l *File) ready() error {
	switch {
	case l.closed:
		return os.ErrClosed
	case l.f == nil:
		return l.open(true)
	}
	return nil
}

func (l *File) open(truncate bool) error {
	flags := os.O_CREATE | os.O_WRONLY | os.O_APPEND
	if truncate {
		flags |= os.O_TRUNC
	}
	f, err := os.OpenFile(l.path, flags, 0o600)
	if err != nil {
		return fmt.Errorf("open log %s: %w", l.path, err)
	}
	st, err := f.Stat()
	if err != nil {
		f.Close()
		return fmt.Errorf("log %s: %w", l.path, err)
	}
	if l.o.OnOpen != nil {
		if err := l.o.OnOpen(f); err != nil {
			f.Close()
			return fmt.Errorf("log %s: %w", l.path, err)
		}
	}
	l.f, l.written = f, st.Size()
	return nil
}
