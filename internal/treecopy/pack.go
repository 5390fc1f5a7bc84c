// Package treecopy moves a file or a folder tree through a tar stream:
// Pack writes one from the host's disk, Unpack writes one to the host's
// disk. Unpack's stream comes from the guest, which may be hostile: it
// writes only inside a new folder of its own, never follows a link out of
// it, never makes a setuid file or a device, and stops before the host's
// disk fills.
package treecopy

import (
	"archive/tar"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"strings"
)

// Stats counts what a Pack or an Unpack moved.
type Stats struct {
	Files, Dirs, Links int
	Bytes              int64
	// Skipped counts entries that are neither files, folders nor links
	// (sockets, devices, fifos): neither side copies them. FirstSkipped
	// names the first (a guest's name: print it through termsafe).
	Skipped      int
	FirstSkipped string
}

// PackOptions tune Pack.
type PackOptions struct {
	// Progress, when set, is called with the bytes written so far.
	Progress func(int64)
	// Trailer, when set, names an empty file Pack writes beside top after
	// all else: GNU tar takes a stream cut at a file's end for a whole
	// one, so a receiver that finds the trailer knows it got everything.
	Trailer string
}

// Pack writes src (a file, a folder and all under it, or a link) to w as
// a tar stream whose top entry is named top. Links are copied as links,
// never followed, src itself included (as docker cp and tar do). Modes
// and times are kept; owners are not (the receiving side's user owns what
// it unpacks).
func Pack(w io.Writer, src, top string, o PackOptions) (Stats, error) {
	var st Stats
	if !validTop(top) || (o.Trailer != "" && (!validTop(o.Trailer) || o.Trailer == top)) {
		return st, fmt.Errorf("treecopy: bad top name %q or trailer %q", top, o.Trailer)
	}
	progress := o.Progress
	tw := tar.NewWriter(w)
	info, err := os.Lstat(src)
	if err != nil {
		return st, err
	}
	add := func(p, name string, info fs.FileInfo) error {
		link := ""
		if info.Mode()&fs.ModeSymlink != 0 {
			if link, err = os.Readlink(p); err != nil {
				return err
			}
		}
		if !info.Mode().IsRegular() && !info.IsDir() && link == "" {
			if st.Skipped++; st.Skipped == 1 {
				st.FirstSkipped = name
			}
			return nil
		}
		hdr, err := tar.FileInfoHeader(info, link)
		if err != nil {
			return err
		}
		hdr.Name = name
		if info.IsDir() {
			hdr.Name += "/"
		}
		hdr.Uid, hdr.Gid, hdr.Uname, hdr.Gname = 0, 0, "", ""
		hdr.Mode &= 0o777
		hdr.Format = tar.FormatPAX
		if err := tw.WriteHeader(hdr); err != nil {
			return err
		}
		switch {
		case info.IsDir():
			st.Dirs++
		case link != "":
			st.Links++
		default:
			st.Files++
			f, err := os.Open(p)
			if err != nil {
				return err
			}
			defer f.Close()
			n, err := io.Copy(tw, io.LimitReader(f, info.Size()))
			st.Bytes += n
			if err != nil {
				return err
			}
			if n != info.Size() {
				return fmt.Errorf("%s shrank while it was copied", p)
			}
			if progress != nil {
				progress(st.Bytes)
			}
		}
		return nil
	}
	end := func() error {
		if o.Trailer != "" {
			if err := tw.WriteHeader(&tar.Header{Name: o.Trailer, Typeflag: tar.TypeReg, Mode: 0o600, Format: tar.FormatPAX}); err != nil {
				return err
			}
		}
		return tw.Close()
	}
	if !info.IsDir() {
		if err := add(src, top, info); err != nil {
			return st, err
		}
		return st, end()
	}
	err = filepath.WalkDir(src, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(src, p)
		if err != nil {
			return err
		}
		info := info
		if p != src {
			if info, err = d.Info(); err != nil {
				return err
			}
		}
		return add(p, path.Join(top, filepath.ToSlash(rel)), info)
	})
	if err != nil {
		return st, err
	}
	return st, end()
}

// validTop says whether name can be a stream's top entry: one path
// element, not "." or "..".
func validTop(name string) bool {
	return name != "" && name != "." && name != ".." && !strings.ContainsAny(name, "/\x00")
}
