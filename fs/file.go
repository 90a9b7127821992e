package fs

import (
	"context"
	"strconv"
	"syscall"
	"time"

	gofs "github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
	"golang.org/x/sys/unix"
)

// file is an open file of the union: a descriptor of the real file in
// the upper or a lower layer. Data goes straight to it (or, for
// ptFile, straight from the kernel to it with FUSE passthrough).
type file struct {
	gofs.FileHandle // a go-fuse LoopbackFile on fd: read, write, fsync, lseek, allocate, ...
	n               *node
	fd              int
}

// ptFile is a file the kernel may serve with FUSE passthrough.
type ptFile struct{ *file }

// PassthroughFd implements gofs.FilePassthroughFder.
func (f ptFile) PassthroughFd() (int, bool) { return f.fd, true }

var (
	_ = (gofs.FileReader)((*file)(nil))
	_ = (gofs.FileWriter)((*file)(nil))
	_ = (gofs.FileReleaser)((*file)(nil))
	_ = (gofs.FilePassthroughFder)(ptFile{})
)

func (f *file) Read(ctx context.Context, dest []byte, off int64) (fuse.ReadResult, syscall.Errno) {
	return f.FileHandle.(gofs.FileReader).Read(ctx, dest, off)
}

func (f *file) Write(ctx context.Context, data []byte, off int64) (uint32, syscall.Errno) {
	return f.FileHandle.(gofs.FileWriter).Write(ctx, data, off)
}

func (f *file) Fsync(ctx context.Context, flags uint32) syscall.Errno {
	return f.FileHandle.(gofs.FileFsyncer).Fsync(ctx, flags)
}

func (f *file) Lseek(ctx context.Context, off uint64, whence uint32) (uint64, syscall.Errno) {
	return f.FileHandle.(gofs.FileLseeker).Lseek(ctx, off, whence)
}

func (f *file) Allocate(ctx context.Context, off uint64, size uint64, mode uint32) syscall.Errno {
	return f.FileHandle.(gofs.FileAllocater).Allocate(ctx, off, size, mode)
}

func (f *file) Release(ctx context.Context) syscall.Errno {
	f.n.openMu.Lock()
	delete(f.n.open, f)
	f.n.openMu.Unlock()
	return f.FileHandle.(gofs.FileReleaser).Release(ctx)
}

// openFd returns the descriptor of one of n's open files.
func (n *node) openFd() (int, bool) {
	n.openMu.Lock()
	defer n.openMu.Unlock()
	for f := range n.open {
		return f.fd, true
	}
	return 0, false
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
	f := &file{FileHandle: gofs.NewLoopbackFile(fd), n: n, fd: fd}
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
	return u.openReal(n, n.realPath(), flags)
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
	p := u.upperPath(n.rel())
	// By path, not following a final symlink; or, for an open file whose
	// names are all gone, through one of its descriptors (the kernel does
	// not always pass the handle of fchmod and the like).
	nofollow := unix.AT_SYMLINK_NOFOLLOW
	var st unix.Stat_t
	if err := unix.Lstat(p, &st); err != nil {
		fd, ok := fdOf(fh)
		if !ok {
			fd, ok = n.openFd()
		}
		if !ok {
			return gofs.ToErrno(err)
		}
		p, nofollow = procFd(fd), 0
		if err := unix.Stat(p, &st); err != nil {
			return gofs.ToErrno(err)
		}
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
	uid, uok := in.GetUID()
	gid, gok := in.GetGID()
	if uok || gok {
		su, sg := -1, -1
		if uok {
			su = int(uid)
		}
		if gok {
			sg = int(gid)
		}
		if err := unix.Fchownat(unix.AT_FDCWD, p, su, sg, nofollow); err != nil {
			return gofs.ToErrno(err)
		}
	}
	if hasSize {
		if isLink {
			return syscall.EINVAL
		}
		if err := unix.Truncate(p, int64(sz)); err != nil {
			return gofs.ToErrno(err)
		}
	}
	mtime, mok := in.GetMTime()
	atime, aok := in.GetATime()
	if mok || aok {
		ts := []unix.Timespec{{Nsec: unix.UTIME_OMIT}, {Nsec: unix.UTIME_OMIT}}
		if aok {
			ts[0] = timespec(atime)
		}
		if mok {
			ts[1] = timespec(mtime)
		}
		if err := unix.UtimesNanoAt(unix.AT_FDCWD, p, ts, nofollow); err != nil {
			return gofs.ToErrno(err)
		}
	}
	if err := unix.Fstatat(unix.AT_FDCWD, p, &st, nofollow); err != nil {
		return gofs.ToErrno(err)
	}
	e := entry{upper: true, upperSt: st, dirLowers: n.dirLowers}
	u.fillAttr(n, &e, &out.Attr)
	return 0
}

func timespec(t time.Time) unix.Timespec {
	ts, _ := unix.TimeToTimespec(t)
	return ts
}

func procFd(fd int) string { return "/proc/self/fd/" + strconv.Itoa(fd) }

// fdOf returns the descriptor of one of our file handles.
func fdOf(fh gofs.FileHandle) (int, bool) {
	switch f := fh.(type) {
	case *file:
		return f.fd, true
	case ptFile:
		return f.fd, true
	}
	return 0, false
}
