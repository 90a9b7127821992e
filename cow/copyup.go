package cow

import (
	"errors"
	"fmt"
	"io"
	"os"
	"strings"

	"golang.org/x/sys/unix"
)

// Meta is what copy-up preserves besides data: owner, mode, times and
// xattrs (overlay's private ones excepted).
type Meta struct {
	Uid, Gid     int
	Mode         uint32 // permission and special bits, no type
	Atime, Mtime unix.Timespec
}

// MetaFromStat takes the metadata copy-up keeps from a stat result.
func MetaFromStat(st *unix.Stat_t) Meta {
	return Meta{
		Uid: int(st.Uid), Gid: int(st.Gid),
		Mode:  st.Mode &^ unix.S_IFMT,
		Atime: st.Atim, Mtime: st.Mtim,
	}
}

// CopyUp copies the object at src (in a lower layer) to dstDir/dstName in
// the upper layer, keeping type, data (with holes), owner, mode, times and
// xattrs. It is built in work and appears at its destination in one step:
// a regular file by linkat of an O_TMPFILE (nothing to clean up after a
// crash), other types by rename. dstName must not exist in dstDir, or be a
// whiteout or another non-directory, which is replaced. With noData a
// regular file is copied empty (the caller is about to truncate it).
//
// A directory is copied without its children: the union merges those from
// the lower layers as before.
func CopyUp(src, work string, dstDirfd int, dstName string, noData bool) error {
	var st unix.Stat_t
	if err := unix.Lstat(src, &st); err != nil {
		return fmt.Errorf("copy-up %s: %w", src, err)
	}
	meta := MetaFromStat(&st)
	switch st.Mode & unix.S_IFMT {
	case unix.S_IFREG:
		size := st.Size
		if noData {
			size = 0
		}
		return copyUpFile(src, size, meta, work, dstDirfd, dstName)
	case unix.S_IFDIR:
		return copyUpNamed(src, meta, work, dstDirfd, dstName, func(tmp string) error {
			return unix.Mkdir(tmp, 0o700)
		})
	case unix.S_IFLNK:
		target, err := os.Readlink(src)
		if err != nil {
			return fmt.Errorf("copy-up %s: %w", src, err)
		}
		return copyUpNamed(src, meta, work, dstDirfd, dstName, func(tmp string) error {
			return unix.Symlink(target, tmp)
		})
	default: // fifo, socket, devices
		return copyUpNamed(src, meta, work, dstDirfd, dstName, func(tmp string) error {
			return unix.Mknod(tmp, st.Mode, int(st.Rdev))
		})
	}
}

// copyUpNamed makes a non-regular object under a temp name in work with
// make, applies meta and src's xattrs, and renames it into place.
func copyUpNamed(src string, meta Meta, work string, dstDirfd int, dstName string, make func(string) error) error {
	tmp, err := tempName(work)
	if err != nil {
		return err
	}
	if err := make(tmp); err != nil {
		return fmt.Errorf("copy-up %s: create: %w", src, err)
	}
	fail := func(err error) error {
		_ = os.RemoveAll(tmp)
		return fmt.Errorf("copy-up %s: %w", src, err)
	}
	if err := copyXattrs(src, func(name string, val []byte) error { return unix.Lsetxattr(tmp, name, val, 0) }); err != nil {
		return fail(err)
	}
	if err := ApplyMeta(tmp, meta); err != nil {
		return fail(err)
	}
	if err := unix.Renameat(unix.AT_FDCWD, tmp, dstDirfd, dstName); err != nil {
		return fail(err)
	}
	return nil
}

// ApplyMeta sets owner, mode and times on path without following a final
// symlink. Owner goes first, since chown clears set-id bits.
func ApplyMeta(path string, m Meta) error {
	if err := unix.Lchown(path, m.Uid, m.Gid); err != nil {
		return fmt.Errorf("chown: %w", err)
	}
	var st unix.Stat_t
	if err := unix.Lstat(path, &st); err != nil {
		return err
	}
	if st.Mode&unix.S_IFMT != unix.S_IFLNK {
		if err := unix.Fchmodat(unix.AT_FDCWD, path, m.Mode, 0); err != nil {
			return fmt.Errorf("chmod: %w", err)
		}
	}
	ts := []unix.Timespec{m.Atime, m.Mtime}
	if err := unix.UtimesNanoAt(unix.AT_FDCWD, path, ts, unix.AT_SYMLINK_NOFOLLOW); err != nil {
		return fmt.Errorf("utimes: %w", err)
	}
	return nil
}

// copyUpFile copies a regular file: PrepareFile, then Publish.
func copyUpFile(src string, size int64, meta Meta, work string, dstDirfd int, dstName string) error {
	f, err := prepareFile(src, size, meta, work)
	if err != nil {
		return err
	}
	defer f.Close()
	return f.Publish(dstDirfd, dstName)
}

// Prepared is a copy of a lower regular file, complete with data and
// metadata, that nobody can see yet: an unnamed O_TMPFILE in the work dir
// (or, where the filesystem has none, a temp name there). Preparing needs
// no lock, since lower layers never change; publishing it is one link or
// rename.
type Prepared struct {
	src   string
	work  string
	file  *os.File // owns fd
	fd    int
	named string // temp path when O_TMPFILE was not available
}

// PrepareFile copies the regular file src (its data unless noData) into
// an unpublished file in work.
func PrepareFile(src, work string, noData bool) (*Prepared, error) {
	var st unix.Stat_t
	if err := unix.Lstat(src, &st); err != nil {
		return nil, fmt.Errorf("copy-up %s: %w", src, err)
	}
	if st.Mode&unix.S_IFMT != unix.S_IFREG {
		return nil, fmt.Errorf("copy-up %s: not a regular file", src)
	}
	size := st.Size
	if noData {
		size = 0
	}
	return prepareFile(src, size, MetaFromStat(&st), work)
}

func prepareFile(src string, size int64, meta Meta, work string) (*Prepared, error) {
	in, err := os.Open(src)
	if err != nil {
		return nil, fmt.Errorf("copy-up %s: %w", src, err)
	}
	defer in.Close()
	p := &Prepared{src: src, work: work}
	p.fd, err = unix.Open(work, unix.O_TMPFILE|unix.O_RDWR|unix.O_CLOEXEC, 0o600)
	if err != nil {
		if p.named, err = tempName(work); err != nil {
			return nil, err
		}
		p.fd, err = unix.Open(p.named, unix.O_CREAT|unix.O_EXCL|unix.O_RDWR|unix.O_CLOEXEC, 0o600)
		if err != nil {
			return nil, fmt.Errorf("copy-up %s: temp file: %w", src, err)
		}
	}
	fail := func(err error) (*Prepared, error) {
		p.Close()
		return nil, fmt.Errorf("copy-up %s: %w", src, err)
	}
	p.file = os.NewFile(uintptr(p.fd), "copy-up")
	if err := CopyData(p.file, in, size); err != nil {
		return fail(err)
	}
	if err := copyXattrs(src, func(name string, val []byte) error { return unix.Fsetxattr(p.fd, name, val, 0) }); err != nil {
		return fail(err)
	}
	if err := unix.Fchown(p.fd, meta.Uid, meta.Gid); err != nil {
		return fail(fmt.Errorf("chown: %w", err))
	}
	if err := unix.Fchmod(p.fd, meta.Mode); err != nil {
		return fail(fmt.Errorf("chmod: %w", err))
	}
	if err := unix.UtimesNanoAt(unix.AT_FDCWD, p.procPath(), []unix.Timespec{meta.Atime, meta.Mtime}, 0); err != nil {
		return fail(fmt.Errorf("utimes: %w", err))
	}
	return p, nil
}

func (p *Prepared) procPath() string { return fmt.Sprintf("/proc/self/fd/%d", p.fd) }

// Publish makes the copy appear as dstDirfd/dstName, replacing a whiteout
// (or other non-directory) there atomically. It can be called once.
func (p *Prepared) Publish(dstDirfd int, dstName string) error {
	if p.named != "" {
		if err := unix.Renameat(unix.AT_FDCWD, p.named, dstDirfd, dstName); err != nil {
			return fmt.Errorf("copy-up %s: %w", p.src, err)
		}
		p.named = ""
		return nil
	}
	// linkat cannot replace an existing name, so over a whiteout the copy
	// is linked under a temp name in the work dir and renamed over it.
	var dst unix.Stat_t
	if err := unix.Fstatat(dstDirfd, dstName, &dst, unix.AT_SYMLINK_NOFOLLOW); err == nil {
		tmp, err := tempName(p.work)
		if err != nil {
			return err
		}
		if err := unix.Linkat(unix.AT_FDCWD, p.procPath(), unix.AT_FDCWD, tmp, unix.AT_SYMLINK_FOLLOW); err != nil {
			return fmt.Errorf("copy-up %s: link: %w", p.src, err)
		}
		if err := unix.Renameat(unix.AT_FDCWD, tmp, dstDirfd, dstName); err != nil {
			_ = os.Remove(tmp)
			return fmt.Errorf("copy-up %s: %w", p.src, err)
		}
		return nil
	}
	if err := unix.Linkat(unix.AT_FDCWD, p.procPath(), dstDirfd, dstName, unix.AT_SYMLINK_FOLLOW); err != nil {
		return fmt.Errorf("copy-up %s: link: %w", p.src, err)
	}
	return nil
}

// Close releases the copy; an unpublished one is gone with it.
func (p *Prepared) Close() error {
	if p.named != "" {
		_ = os.Remove(p.named)
		p.named = ""
	}
	if p.file != nil {
		err := p.file.Close()
		p.file, p.fd = nil, -1
		return err
	}
	if p.fd >= 0 {
		err := unix.Close(p.fd)
		p.fd = -1
		return err
	}
	return nil
}

// CopyData copies size bytes of in to out, keeping holes: it copies only
// the data extents found by SEEK_DATA/SEEK_HOLE, each with
// copy_file_range (a reflink or in-kernel copy where the filesystem can),
// falling back to read/write, and sets the final size with ftruncate.
func CopyData(out, in *os.File, size int64) error {
	if size == 0 {
		return nil
	}
	// A whole-file clone is the cheapest copy where it is supported.
	if err := unix.IoctlFileClone(int(out.Fd()), int(in.Fd())); err == nil {
		return nil
	}
	if err := out.Truncate(size); err != nil {
		return fmt.Errorf("truncate: %w", err)
	}
	ifd := int(in.Fd())
	var off int64
	for off < size {
		data, err := unix.Seek(ifd, off, unix.SEEK_DATA)
		if err != nil {
			if errors.Is(err, unix.ENXIO) { // only a hole is left
				return nil
			}
			// No SEEK_DATA support: treat the rest as data.
			data = off
		}
		hole, err := unix.Seek(ifd, data, unix.SEEK_HOLE)
		if err != nil {
			hole = size
		}
		if hole > size {
			hole = size
		}
		if err := copyRange(out, in, data, hole-data); err != nil {
			return err
		}
		off = hole
	}
	return nil
}

// copyRange copies n bytes at off from in to the same offset in out.
func copyRange(out, in *os.File, off, n int64) error {
	inOff, outOff := off, off
	for n > 0 {
		chunk := n
		if chunk > 1<<30 {
			chunk = 1 << 30
		}
		w, err := unix.CopyFileRange(int(in.Fd()), &inOff, int(out.Fd()), &outOff, int(chunk), 0)
		if err != nil || w == 0 {
			if err == nil || errors.Is(err, unix.EXDEV) || errors.Is(err, unix.EINVAL) || errors.Is(err, unix.ENOSYS) || errors.Is(err, unix.EOPNOTSUPP) {
				return copyRangeRW(out, in, inOff, n)
			}
			return fmt.Errorf("copy_file_range: %w", err)
		}
		n -= int64(w)
	}
	return nil
}

func copyRangeRW(out, in *os.File, off, n int64) error {
	buf := make([]byte, 1<<20)
	r := io.NewSectionReader(in, off, n)
	for {
		k, err := r.Read(buf)
		if k > 0 {
			if _, werr := out.WriteAt(buf[:k], off); werr != nil {
				return fmt.Errorf("write: %w", werr)
			}
			off += int64(k)
		}
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return fmt.Errorf("read: %w", err)
		}
	}
}

// copyXattrs copies every xattr of src (not following a final symlink)
// through set, except overlay's private ones, which describe src's layer and
// mean nothing at the destination.
func copyXattrs(src string, set func(name string, val []byte) error) error {
	names, err := ListXattrs(src)
	if err != nil {
		if errors.Is(err, unix.ENOTSUP) {
			return nil
		}
		return fmt.Errorf("list xattrs: %w", err)
	}
	for _, name := range names {
		if IsPrivateXattr(name) {
			continue
		}
		val, err := GetXattr(src, name)
		if err != nil {
			if errors.Is(err, unix.ENODATA) {
				continue
			}
			return fmt.Errorf("get xattr %s: %w", name, err)
		}
		if err := set(name, val); err != nil {
			// security.* labels may be refused by the upper filesystem;
			// overlay ignores those too.
			if strings.HasPrefix(name, "security.") {
				continue
			}
			return fmt.Errorf("set xattr %s: %w", name, err)
		}
	}
	return nil
}

// ListXattrs lists the xattr names of path without following a symlink.
func ListXattrs(path string) ([]string, error) {
	buf := make([]byte, 1024)
	for {
		n, err := unix.Llistxattr(path, buf)
		if errors.Is(err, unix.ERANGE) {
			sz, err := unix.Llistxattr(path, nil)
			if err != nil {
				return nil, err
			}
			buf = make([]byte, sz+64)
			continue
		}
		if err != nil {
			return nil, err
		}
		var names []string
		for _, s := range strings.Split(string(buf[:n]), "\x00") {
			if s != "" {
				names = append(names, s)
			}
		}
		return names, nil
	}
}

// GetXattr reads one xattr of path without following a symlink.
func GetXattr(path, name string) ([]byte, error) {
	buf := make([]byte, 256)
	for {
		n, err := unix.Lgetxattr(path, name, buf)
		if errors.Is(err, unix.ERANGE) {
			sz, err := unix.Lgetxattr(path, name, nil)
			if err != nil {
				return nil, err
			}
			buf = make([]byte, sz+16)
			continue
		}
		if err != nil {
			return nil, err
		}
		return buf[:n], nil
	}
}
