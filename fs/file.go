package fs

import (
	"context"
	"os"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"time"

	gofs "github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
	"golang.org/x/sys/unix"
)

// file is an open file of the union: a descriptor of the real file in
// the upper or a lower layer. Data goes straight to it (or, for
// ptFile, straight from the kernel to it with FUSE passthrough). The
// descriptor is used raw: an os.File would cost three system calls and
// a finalizer per open, for nothing the union needs.
type file struct {
	n     *node
	fd    int
	upper bool // fd is the upper layer's file (opened after copy-up)
}

// ptFile is a file the kernel may serve with FUSE passthrough.
type ptFile struct{ *file }

// PassthroughFd implements gofs.FilePassthroughFder.
func (f ptFile) PassthroughFd() (int, bool) { return f.fd, true }

var (
	_ = (gofs.FileReader)((*file)(nil))
	_ = (gofs.FileWriter)((*file)(nil))
	_ = (gofs.FileFsyncer)((*file)(nil))
	_ = (gofs.FileLseeker)((*file)(nil))
	_ = (gofs.FileAllocater)((*file)(nil))
	_ = (gofs.FileReleaser)((*file)(nil))
	_ = (gofs.FilePassthroughFder)(ptFile{})
)

// Read implements gofs.FileReader (when the kernel does not pass through).
func (f *file) Read(ctx context.Context, dest []byte, off int64) (fuse.ReadResult, syscall.Errno) {
	return fuse.ReadResultFd(uintptr(f.fd), off, len(dest)), 0
}

// Write implements gofs.FileWriter (when the kernel does not pass through).
func (f *file) Write(ctx context.Context, data []byte, off int64) (uint32, syscall.Errno) {
	n, err := unix.Pwrite(f.fd, data, off)
	return uint32(n), gofs.ToErrno(err)
}

// Fsync implements gofs.FileFsyncer; bit 0 of flags asks for data only.
func (f *file) Fsync(ctx context.Context, flags uint32) syscall.Errno {
	if flags&1 != 0 {
		return gofs.ToErrno(unix.Fdatasync(f.fd))
	}
	return gofs.ToErrno(unix.Fsync(f.fd))
}

// Lseek implements gofs.FileLseeker (SEEK_DATA and SEEK_HOLE).
func (f *file) Lseek(ctx context.Context, off uint64, whence uint32) (uint64, syscall.Errno) {
	n, err := unix.Seek(f.fd, int64(off), int(whence))
	return uint64(n), gofs.ToErrno(err)
}

// Allocate implements gofs.FileAllocater.
func (f *file) Allocate(ctx context.Context, off uint64, size uint64, mode uint32) syscall.Errno {
	return gofs.ToErrno(unix.Fallocate(f.fd, mode, int64(off), int64(size)))
}

// Release implements gofs.FileReleaser.
func (f *file) Release(ctx context.Context) syscall.Errno {
	f.n.openMu.Lock()
	delete(f.n.open, f)
	f.n.openMu.Unlock()
	return gofs.ToErrno(unix.Close(f.fd))
}

// withUpperFd runs fn with a descriptor of n's upper file, fh's if it
// is one, else any open one, and reports whether there was one. Changes
// and stats through it need no path walk, and still reach the file once
// its names are gone. n.openMu is held meanwhile, so Release cannot
// close the descriptor (and its number be reused) under fn.
func (n *node) withUpperFd(fh gofs.FileHandle, fn func(fd int)) bool {
	n.openMu.Lock()
	defer n.openMu.Unlock()
	if f := fileOf(fh); f != nil && f.upper {
		fn(f.fd)
		return true
	}
	for f := range n.open {
		if f.upper {
			fn(f.fd)
			return true
		}
	}
	return false
}

// openFlags are the flags of an open request that apply to the real
// file: the kernel does O_APPEND itself (it sends writes at the end), and
// creation and truncation are done by the union.
func openFlags(flags uint32) uint32 {
	return flags &^ (unix.O_APPEND | fuse.FMODE_EXEC | unix.O_CREAT | unix.O_EXCL | unix.O_NOCTTY | unix.O_TRUNC)
}

// openReal opens the real file at p for node n. A superseded node is
// not opened: ESTALE makes the kernel look the name up again (open(2)
// retries once with LOOKUP_REVAL) and open the node that replaced it.
//
// Preconditions: u.mu is held.
func (u *union) openReal(n *node, p string, flags uint32) (gofs.FileHandle, uint32, syscall.Errno) {
	if n.superseded {
		return nil, 0, syscall.ESTALE
	}
	fl := int(openFlags(flags))
	if flags&unix.O_TRUNC != 0 {
		fl |= unix.O_TRUNC
	}
	fd, err := unix.Open(p, fl|unix.O_CLOEXEC|unix.O_NOFOLLOW, 0)
	if err != nil {
		return nil, 0, gofs.ToErrno(err)
	}
	fh, fflags := u.handle(n, fd)
	return fh, fflags, 0
}

// handle wraps an open descriptor of n's real file, for passthrough.
//
// Preconditions: u.mu is held; n is not superseded.
func (u *union) handle(n *node, fd int) (gofs.FileHandle, uint32) {
	f := &file{n: n, fd: fd, upper: n.upper}
	n.openMu.Lock()
	if n.open == nil {
		n.open = map[*file]struct{}{}
	}
	n.open[f] = struct{}{}
	n.openMu.Unlock()
	if !n.upper && !u.readOnly() {
		n.lowerBacked.Store(true)
	}
	return ptFile{f}, 0
}

// supersede retires node n, just copied up while the kernel may still
// hold its lower file as passthrough backing: its inode number moves to a
// new generation, so the next lookup of any of its names makes a new node
// (same st_ino for the user) served from the upper file, and its cached
// dentry is dropped so that lookup happens. Descriptors already open on n
// keep reading the lower file, as with kernel overlay.
//
// Preconditions: u.mu is held for writing.
func (u *union) supersede(n *node) {
	n.superseded = true
	u.inos.bump(n.ino)
	if name, p := n.Parent(); p != nil {
		// Not from inside this request: the kernel may hold locks the
		// notification needs.
		go p.NotifyEntry(name)
	}
}

var _ = (gofs.NodeFlusher)((*node)(nil))

// Flush implements gofs.NodeFlusher. It answers ENOSYS, so the kernel
// stops sending FLUSH on every close: the layers are local files whose
// close reports nothing that flush would, and locks are the kernel's.
func (n *node) Flush(ctx context.Context, f gofs.FileHandle) syscall.Errno {
	return syscall.ENOSYS
}

var _ = (gofs.NodeOpener)((*node)(nil))

// Open implements gofs.NodeOpener: an open for writing (or truncation)
// copies the file up first.
func (n *node) Open(ctx context.Context, flags uint32) (gofs.FileHandle, uint32, syscall.Errno) {
	u := n.u
	write := flags&unix.O_ACCMODE != unix.O_RDONLY || flags&unix.O_TRUNC != 0
	if !write {
		u.mu.RLock()
		defer u.mu.RUnlock()
		return u.openReal(n, n.realPath(), flags)
	}
	if u.readOnly() {
		return nil, 0, syscall.EROFS
	}
	defer u.beginChange(n, flags&unix.O_TRUNC != 0)()
	if errno := u.copyUp(n, flags&unix.O_TRUNC != 0); errno != 0 {
		return nil, 0, errno
	}
	fh, fflags, errno := u.openReal(n, n.realPath(), flags)
	if errno == 0 && flags&unix.O_ACCMODE != unix.O_RDONLY {
		if f := fileOf(fh); f != nil {
			if err := dropSetID(ctx, f.fd); err != nil {
				fh.(gofs.FileReleaser).Release(ctx)
				return nil, 0, gofs.ToErrno(err)
			}
		}
	}
	return fh, fflags, errno
}

// dropSetID clears the set-user-ID bit, and the set-group-ID bit where
// the kernel would (group-executable, or a caller outside the file's
// group), of the file open at fd when an unprivileged caller opens it
// for writing. The kernel clears them on the first write, as the
// writer, but laminafs negotiates HANDLE_KILLPRIV_V2, which leaves
// that to the server, and with passthrough the server never sees the
// writes: so it does it at the open, which is the same for any open
// that writes (and a little earlier for one that never does).
func dropSetID(ctx context.Context, fd int) error {
	c, ok := fuse.FromContext(ctx)
	if !ok || c.Uid == 0 {
		return nil // root has CAP_FSETID: the kernel keeps the bits
	}
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return err
	}
	m := st.Mode & 07777
	if m&(unix.S_ISUID|unix.S_ISGID) == 0 {
		return nil
	}
	keep := m &^ unix.S_ISUID
	if m&unix.S_ISGID != 0 && (m&unix.S_IXGRP != 0 || !inGroup(c, st.Gid)) {
		keep &^= unix.S_ISGID
	}
	if keep == m {
		return nil
	}
	return unix.Fchmod(fd, keep)
}

// inGroup reports whether the caller c belongs to group gid, by its
// primary group or, read from /proc, its supplementary groups.
func inGroup(c *fuse.Caller, gid uint32) bool {
	if c.Gid == gid {
		return true
	}
	b, err := os.ReadFile("/proc/" + strconv.Itoa(int(c.Pid)) + "/status")
	if err != nil {
		return false
	}
	for _, line := range strings.Split(string(b), "\n") {
		if g, ok := strings.CutPrefix(line, "Groups:"); ok {
			for _, f := range strings.Fields(g) {
				if f == strconv.Itoa(int(gid)) {
					return true
				}
			}
		}
	}
	return false
}

var _ = (gofs.NodeSetattrer)((*node)(nil))

// Setattr implements gofs.NodeSetattrer: any change copies up first, then
// applies to the upper copy by path (an open lower descriptor must not be
// changed), or by descriptor when the file has no name left.
func (n *node) Setattr(ctx context.Context, fh gofs.FileHandle, in *fuse.SetAttrIn, out *fuse.AttrOut) syscall.Errno {
	u := n.u
	if u.readOnly() {
		return syscall.EROFS
	}
	sz, hasSize := in.GetSize()
	defer u.beginChange(n, hasSize && sz == 0)()
	if errno := u.copyUp(n, hasSize && sz == 0); errno != 0 {
		return errno
	}
	var errno syscall.Errno
	if n.withUpperFd(fh, func(fd int) { errno = u.setattrFd(n, fd, in, out) }) {
		return errno
	}
	// By path, not following a final symlink. A file with no name left
	// and no upper descriptor open has nothing to change here: any
	// descriptor of it still open is of a lower layer, which must not
	// change.
	p := u.upperPath(n.rel())
	const nofollow = unix.AT_SYMLINK_NOFOLLOW
	var st unix.Stat_t
	if err := unix.Lstat(p, &st); err != nil {
		return gofs.ToErrno(err)
	}
	isLink := st.Mode&unix.S_IFMT == unix.S_IFLNK
	if m, ok := in.GetMode(); ok {
		if isLink {
			return syscall.EOPNOTSUPP // chmod would follow the link
		}
		if err := unix.Fchmodat(unix.AT_FDCWD, p, m&07777, 0); err != nil {
			return gofs.ToErrno(err)
		}
	}
	if su, sg, ok := setOwner(in); ok {
		if err := unix.Fchownat(unix.AT_FDCWD, p, su, sg, nofollow); err != nil {
			return gofs.ToErrno(err)
		}
	}
	if sz, ok := in.GetSize(); ok {
		if isLink {
			return syscall.EINVAL
		}
		if err := unix.Truncate(p, int64(sz)); err != nil {
			return gofs.ToErrno(err)
		}
	}
	if ts, ok := setTimes(in); ok {
		if err := unix.UtimesNanoAt(unix.AT_FDCWD, p, ts, nofollow); err != nil {
			return gofs.ToErrno(err)
		}
	}
	if err := unix.Fstatat(unix.AT_FDCWD, p, &st, nofollow); err != nil {
		return gofs.ToErrno(err)
	}
	if m, kill := killSuidgid(in, st.Mode); kill && !isLink {
		if err := unix.Fchmodat(unix.AT_FDCWD, p, m, 0); err != nil {
			return gofs.ToErrno(err)
		}
		st.Mode = st.Mode&unix.S_IFMT | m
	}
	e := entry{upper: true, upperSt: st, dirLowers: n.dirLowers}
	u.fillAttr(n, &e, &out.Attr)
	return 0
}

// setattrFd is Setattr through fd, a descriptor of n's upper file (a
// regular file: the union opens nothing else).
func (u *union) setattrFd(n *node, fd int, in *fuse.SetAttrIn, out *fuse.AttrOut) syscall.Errno {
	if m, ok := in.GetMode(); ok {
		if err := unix.Fchmod(fd, m&07777); err != nil {
			return gofs.ToErrno(err)
		}
	}
	if su, sg, ok := setOwner(in); ok {
		if err := unix.Fchown(fd, su, sg); err != nil {
			return gofs.ToErrno(err)
		}
	}
	if sz, ok := in.GetSize(); ok {
		// The descriptor may be read-only; its /proc path reaches the
		// file even when it has no name left.
		if err := unix.Truncate(procFd(fd), int64(sz)); err != nil {
			return gofs.ToErrno(err)
		}
	}
	if ts, ok := setTimes(in); ok {
		if err := futimens(fd, ts); err != nil {
			return gofs.ToErrno(err)
		}
	}
	e := entry{upper: true, dirLowers: n.dirLowers}
	if err := unix.Fstat(fd, &e.upperSt); err != nil {
		return gofs.ToErrno(err)
	}
	if m, kill := killSuidgid(in, e.upperSt.Mode); kill {
		if err := unix.Fchmod(fd, m); err != nil {
			return gofs.ToErrno(err)
		}
		e.upperSt.Mode = e.upperSt.Mode&unix.S_IFMT | m
	}
	u.fillAttr(n, &e, &out.Attr)
	return 0
}

// killSuidgid returns the permission bits without set-user-ID and
// set-group-ID when a setattr carries FATTR_KILL_SUIDGID (a truncate by
// a caller without CAP_FSETID, with HANDLE_KILLPRIV_V2) and the file
// still has either: truncating as root already dropped set-user-ID, but
// keeps set-group-ID on a file that is not group-executable.
func killSuidgid(in *fuse.SetAttrIn, mode uint32) (uint32, bool) {
	if in.Valid&fuse.FATTR_KILL_SUIDGID == 0 || mode&(unix.S_ISUID|unix.S_ISGID) == 0 || mode&unix.S_IFMT == unix.S_IFDIR {
		return 0, false
	}
	return mode & 07777 &^ (unix.S_ISUID | unix.S_ISGID), true
}

// setOwner is the chown a setattr asks for: -1 for an id it keeps.
func setOwner(in *fuse.SetAttrIn) (uid, gid int, ok bool) {
	uid, gid = -1, -1
	if v, set := in.GetUID(); set {
		uid, ok = int(v), true
	}
	if v, set := in.GetGID(); set {
		gid, ok = int(v), true
	}
	return uid, gid, ok
}

// setTimes is the utimensat a setattr asks for (UTIME_OMIT for a time
// it keeps).
func setTimes(in *fuse.SetAttrIn) ([]unix.Timespec, bool) {
	mtime, mok := in.GetMTime()
	atime, aok := in.GetATime()
	if !mok && !aok {
		return nil, false
	}
	ts := []unix.Timespec{{Nsec: unix.UTIME_OMIT}, {Nsec: unix.UTIME_OMIT}}
	if aok {
		ts[0] = timespec(atime)
	}
	if mok {
		ts[1] = timespec(mtime)
	}
	return ts, true
}

// futimens sets the times of the file open at fd (utimensat with no
// path, which x/sys/unix does not offer).
func futimens(fd int, ts []unix.Timespec) error {
	_, _, e := unix.Syscall6(unix.SYS_UTIMENSAT, uintptr(fd), 0, uintptr(unsafePointer(&ts[0])), 0, 0, 0)
	runtime.KeepAlive(ts)
	if e != 0 {
		return e
	}
	return nil
}

func timespec(t time.Time) unix.Timespec {
	ts, _ := unix.TimeToTimespec(t)
	return ts
}

func procFd(fd int) string { return "/proc/self/fd/" + strconv.Itoa(fd) }

// fileOf returns our file behind a file handle, or nil.
func fileOf(fh gofs.FileHandle) *file {
	switch f := fh.(type) {
	case *file:
		return f
	case ptFile:
		return f.file
	}
	return nil
}

// fdOf returns the descriptor of one of our file handles.
func fdOf(fh gofs.FileHandle) (int, bool) {
	if f := fileOf(fh); f != nil {
		return f.fd, true
	}
	return 0, false
}
