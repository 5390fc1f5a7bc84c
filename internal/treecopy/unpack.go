package treecopy

import (
	"archive/tar"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strings"
	"time"
)

// DefaultReserve is the free space Unpack leaves on the host's disk: a
// guest can send a stream without end, and the host must not fill up.
const DefaultReserve = 1 << 30

// minInodes is the free inodes Unpack leaves: a stream of empty files
// fills a disk's inode table before its blocks.
const minInodes = 10_000

// chunk is how much of a file is written between two looks at the free
// space.
const chunk = 64 << 20

// maxDirNames bounds the bytes of the folder names Unpack remembers (to
// set their modes and times last): a stream's folders cost inodes, which
// room bounds, but not this process's memory, which this does. A var for
// tests.
var maxDirNames = 64 << 20

// Options tune Unpack.
type Options struct {
	// Reserve is the free space to leave on dst's disk (DefaultReserve
	// when 0).
	Reserve int64
	// Progress, when set, is called with the bytes written so far.
	Progress func(int64)
	// Free reports a folder's free bytes and inodes (freeSpace when nil;
	// tests replace it).
	Free func(dir string) (bytes, inodes int64, err error)
	// Commit, when set, is asked once the whole stream is unpacked,
	// before anything is put at dst: its error (the sender failed after
	// all) leaves nothing there.
	Commit func() error
}

var (
	// ErrExists is an Unpack whose dst is a folder already: it does not
	// merge into one.
	ErrExists = errors.New("exists")
	// ErrEmpty is a stream with nothing in it.
	ErrEmpty = errors.New("the stream held nothing to copy")
)

// Unpack reads a tar stream whose entries are all under one top entry
// (top, or when top is "" the first entry's first name) and puts that
// entry at dst: a new name, or a file it replaces. The stream is unpacked into a
// new folder beside dst, which nothing outside it can be reached through,
// and renamed into place only when all of it is there: a stream that
// breaks off, names a path outside top, or would leave less than the
// reserve free leaves nothing at dst. Modes are kept without setuid,
// setgid and sticky bits; owners are the caller's; times are kept.
func Unpack(r io.Reader, top, dst string, o Options) (st Stats, err error) {
	if top != "" && !validTop(top) {
		return st, fmt.Errorf("treecopy: bad top name %q", top)
	}
	if o.Reserve == 0 {
		o.Reserve = DefaultReserve
	}
	if o.Free == nil {
		o.Free = freeSpace
	}
	tmp, err := os.MkdirTemp(filepath.Dir(dst), ".cowork-cp-")
	if err != nil {
		return st, err
	}
	defer os.RemoveAll(tmp)
	root, err := os.OpenRoot(tmp)
	if err != nil {
		return st, err
	}
	defer root.Close()
	u := &unpacker{root: root, dir: tmp, top: top, o: o, dirs: map[string]dirTimes{}, umask: umask()}
	if err := u.run(tar.NewReader(r)); err != nil {
		return u.st, err
	}
	top0, err := root.Lstat(u.top)
	if u.top == "" || err != nil {
		return u.st, ErrEmpty
	}
	if o.Commit != nil {
		if err := o.Commit(); err != nil {
			return u.st, err
		}
	}
	if cur, err := os.Lstat(dst); err == nil && (cur.IsDir() || top0.IsDir()) {
		return u.st, fmt.Errorf("%s: %w", dst, ErrExists)
	}
	// The folders' modes last, once nothing can fail but the rename: a
	// folder made read-only would refuse what goes in it, and the removal
	// of what is left when the copy fails.
	if err := u.setDirs(); err != nil {
		return u.st, err
	}
	return u.st, os.Rename(filepath.Join(tmp, u.top), dst)
}

// dirTimes is what a folder gets once its content is in.
type dirTimes struct {
	mode  int64
	mtime time.Time
}

type unpacker struct {
	root *os.Root
	dir  string
	top  string
	o    Options
	st   Stats
	// dirs are the folders made, with the mode and time each gets once
	// its content is in; dirBytes is their names' length.
	dirs     map[string]dirTimes
	dirBytes int
	umask    fs.FileMode
}

func (u *unpacker) run(tr *tar.Reader) error {
	for {
		hdr, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			return fmt.Errorf("read the stream: %w", err)
		}
		name, err := u.local(hdr.Name)
		if err != nil {
			return err
		}
		if err := u.room(0); err != nil {
			return err
		}
		switch hdr.Typeflag {
		case tar.TypeDir:
			err = u.root.MkdirAll(name, 0o700)
			if _, seen := u.dirs[name]; err == nil && !seen {
				if u.dirBytes += len(name); u.dirBytes > maxDirNames {
					return fmt.Errorf("the stream names more folders than a copy takes (%d MiB of names)", maxDirNames>>20)
				}
				u.st.Dirs++
			}
			if err == nil {
				u.dirs[name] = dirTimes{hdr.Mode, hdr.ModTime}
			}
		case tar.TypeReg:
			err = u.file(name, hdr, tr)
		case tar.TypeSymlink:
			if err = u.parent(name); err == nil {
				err = u.root.Symlink(hdr.Linkname, name)
				u.st.Links++
			}
		case tar.TypeLink:
			var target string
			if target, err = u.local(hdr.Linkname); err == nil {
				if err = u.parent(name); err == nil {
					err = u.root.Link(target, name)
					u.st.Files++
				}
			}
		default:
			if u.st.Skipped++; u.st.Skipped == 1 {
				u.st.FirstSkipped = name
			}
		}
		if err != nil {
			return fmt.Errorf("unpack %q: %w", name, err)
		}
	}
	return nil
}

// setDirs gives the folders their modes and times, deepest first:
// writing in a folder changes its time.
func (u *unpacker) setDirs() error {
	names := make([]string, 0, len(u.dirs))
	for name := range u.dirs {
		names = append(names, name)
	}
	slices.SortFunc(names, func(a, b string) int { return strings.Count(b, "/") - strings.Count(a, "/") })
	for _, name := range names {
		d := u.dirs[name]
		if err := u.root.Chmod(name, u.perm(d.mode)); err != nil {
			return err
		}
		if err := u.root.Chtimes(name, d.mtime, d.mtime); err != nil {
			return err
		}
	}
	return nil
}

// perm is a stream's mode as this host makes it: the permission bits
// alone (no setuid, setgid or sticky), less the process's umask, as tar
// does for a user.
func (u *unpacker) perm(mode int64) fs.FileMode {
	return fs.FileMode(mode).Perm() &^ u.umask
}

// local is the stream's name as a path inside top, or why it is not one.
func (u *unpacker) local(name string) (string, error) {
	clean := path.Clean(strings.TrimSuffix(name, "/"))
	if u.top == "" {
		if first, _, _ := strings.Cut(clean, "/"); validTop(first) {
			u.top = first
		}
	}
	if u.top == "" || !filepath.IsLocal(clean) || (clean != u.top && !strings.HasPrefix(clean, u.top+"/")) {
		return "", fmt.Errorf("the stream names %q, outside %q: refused", name, u.top)
	}
	return clean, nil
}

// parent makes the folders above name.
func (u *unpacker) parent(name string) error {
	if dir := path.Dir(name); dir != "." {
		return u.root.MkdirAll(dir, 0o700)
	}
	return nil
}

// file writes a regular file. It is made anew (O_EXCL): a name the stream
// gave before, or a link it made there, is refused rather than written
// through.
func (u *unpacker) file(name string, hdr *tar.Header, r io.Reader) error {
	if err := u.parent(name); err != nil {
		return err
	}
	if err := u.room(hdr.Size); err != nil {
		return err
	}
	f, err := u.root.OpenFile(name, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return err
	}
	defer f.Close()
	for left := hdr.Size; left > 0; {
		// What is left of the file must fit, as the disk is now.
		if err := u.room(left); err != nil {
			return err
		}
		n := min(left, chunk)
		w, err := io.CopyN(f, r, n)
		u.st.Bytes += w
		left -= w
		if err != nil {
			return err
		}
		if u.o.Progress != nil {
			u.o.Progress(u.st.Bytes)
		}
	}
	if err := f.Close(); err != nil {
		return err
	}
	u.st.Files++
	if err := u.root.Chmod(name, u.perm(hdr.Mode)); err != nil {
		return err
	}
	return u.root.Chtimes(name, hdr.AccessTime, hdr.ModTime)
}

// room says whether n more bytes leave the reserve free on the disk.
func (u *unpacker) room(n int64) error {
	free, inodes, err := u.o.Free(u.dir)
	if err != nil {
		return nil // a disk that cannot say: its own ENOSPC stops the copy
	}
	if free-n < u.o.Reserve || (inodes >= 0 && inodes < minInodes) {
		return fmt.Errorf("the host's disk is nearly full (%d MiB free, %d files): the copy stopped to keep %d MiB free", free>>20, inodes, u.o.Reserve>>20)
	}
	return nil
}
