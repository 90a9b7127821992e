package fs

import (
	"context"
	"os"
	"strings"
	"syscall"

	gofs "github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
	"golang.org/x/sys/unix"

	"github.com/lamina-project/lamina/cow"
)

// owner is the uid and gid a new object gets: the caller's, or the
// directory's group when it has the set-group-ID bit (and then a new
// directory inherits the bit), as the kernel does on a local filesystem.
func (u *union) owner(ctx context.Context, parentUpper string, isDir bool) (uid, gid int, sgid bool) {
	uid, gid = u.euid, u.egid
	if c, ok := fuse.FromContext(ctx); ok {
		uid, gid = int(c.Uid), int(c.Gid)
	}
	var st unix.Stat_t
	if unix.Stat(parentUpper, &st) == nil && st.Mode&unix.S_ISGID != 0 {
		gid = int(st.Gid)
		sgid = isDir
	}
	return uid, gid, sgid
}

// kind is what createIn makes.
type kind int

const (
	kindFile kind = iota // regular file, device, fifo or socket
	kindDir
	kindSymlink
	kindLink
)

// createIn makes a new object called name in directory n: directly in
// the upper directory when the name is free there, or in the work dir and
// then moved over a whiteout of a lower object (a new directory there is
// opaque, as in overlay). mk makes the object at the path it is given,
// with the permission bits it is given; then, unless it is a hard link
// (which keeps its file's owner and mode), it gets the caller as owner
// and, after the chown (which would clear set-id bits), the mode bits
// asked for (none for a symlink). When the caller is the server's own
// user and asks for no special bits, the object is made with its final
// mode and owner at once, saving two system calls per file (untar as
// root).
//
// Preconditions: u.mu is held for writing.
func (u *union) createIn(ctx context.Context, n *node, name string, k kind, mode uint32, mk func(p string, perm uint32) error) syscall.Errno {
	isDir := k == kindDir
	if u.readOnly() {
		return syscall.EROFS
	}
	if reservedName(name) {
		return syscall.EINVAL
	}
	e, errno := u.resolve(n, name)
	if errno == 0 {
		return syscall.EEXIST
	} else if errno != syscall.ENOENT {
		return errno
	}
	// In an upper directory, resolve has just looked at the name there.
	wasUpper := n.upper
	whiteout := wasUpper && cow.IsWhiteoutStat(&e.upperSt)
	if errno := u.copyUpDir(n); errno != 0 {
		return errno
	}
	parentPath := u.upperPath(n.rel())
	final := u.upperPath(n.childRel(name))
	if !wasUpper {
		var st unix.Stat_t
		whiteout = unix.Lstat(final, &st) == nil && cow.IsWhiteoutStat(&st)
	}
	target := final
	if whiteout {
		tmp, err := tempName(u.work)
		if err != nil {
			return errnoOf(err)
		}
		target = tmp
	}
	uid, gid, sgid := u.owner(ctx, parentPath, isDir)
	perm := mode & 07777
	if sgid {
		perm |= unix.S_ISGID
	}
	direct := uid == u.euid && gid == u.egid && !sgid && perm&07000 == 0
	mkPerm := uint32(0o600)
	if isDir {
		mkPerm = 0o700
	}
	if direct {
		mkPerm = perm
	}
	if err := mk(target, mkPerm); err != nil {
		return errnoOf(err)
	}
	fail := func(err error) syscall.Errno {
		_ = os.RemoveAll(target)
		return errnoOf(err)
	}
	if direct {
		// Made with its final mode, owned by the caller already.
	} else if k != kindLink {
		if err := unix.Lchown(target, uid, gid); err != nil {
			return fail(err)
		}
	}
	if !direct && k != kindLink && k != kindSymlink {
		if err := unix.Chmod(target, perm); err != nil {
			return fail(err)
		}
	}
	if !whiteout {
		return 0
	}
	if isDir {
		if err := cow.SetOpaque(u.ns, target); err != nil {
			return fail(err)
		}
		if err := unix.Renameat2(unix.AT_FDCWD, target, unix.AT_FDCWD, final, unix.RENAME_EXCHANGE); err != nil {
			return fail(err)
		}
		_ = unix.Unlink(target) // now the old whiteout
		return 0
	}
	if err := unix.Rename(target, final); err != nil {
		return fail(err)
	}
	return 0
}

// reservedName reports whether name is an OCI whiteout marker, which
// lower layers may hold and the union reads as a whiteout: it cannot be
// created (fuse-overlayfs refuses it the same way).
func reservedName(name string) bool { return strings.HasPrefix(name, cow.OCIWhiteoutPrefix) }

// tempName is a fresh path in the work dir.
func tempName(work string) (string, error) {
	f, err := os.CreateTemp(work, "new-")
	if err != nil {
		return "", err
	}
	name := f.Name()
	f.Close()
	return name, os.Remove(name)
}

// lookupNew resolves a freshly made child and gives its inode.
//
// Preconditions: u.mu is held.
func (u *union) lookupNew(ctx context.Context, n *node, name string, out *fuse.EntryOut) (*gofs.Inode, syscall.Errno) {
	e, errno := u.resolve(n, name)
	if errno != 0 {
		return nil, errno
	}
	return u.newNode(ctx, n, &e, out), 0
}

var _ = (gofs.NodeMkdirer)((*node)(nil))

// Mkdir implements gofs.NodeMkdirer.
func (n *node) Mkdir(ctx context.Context, name string, mode uint32, out *fuse.EntryOut) (*gofs.Inode, syscall.Errno) {
	u := n.u
	u.mu.Lock()
	defer u.mu.Unlock()
	if errno := u.createIn(ctx, n, name, kindDir, mode, func(p string, perm uint32) error {
		return unix.Mkdir(p, perm)
	}); errno != 0 {
		return nil, errno
	}
	return u.lookupNew(ctx, n, name, out)
}

var _ = (gofs.NodeMknoder)((*node)(nil))

// Mknod implements gofs.NodeMknoder.
func (n *node) Mknod(ctx context.Context, name string, mode, rdev uint32, out *fuse.EntryOut) (*gofs.Inode, syscall.Errno) {
	u := n.u
	u.mu.Lock()
	defer u.mu.Unlock()
	if errno := u.createIn(ctx, n, name, kindFile, mode, func(p string, perm uint32) error {
		return unix.Mknod(p, mode&unix.S_IFMT|perm, int(rdev))
	}); errno != 0 {
		return nil, errno
	}
	return u.lookupNew(ctx, n, name, out)
}

var _ = (gofs.NodeSymlinker)((*node)(nil))

// Symlink implements gofs.NodeSymlinker.
func (n *node) Symlink(ctx context.Context, target, name string, out *fuse.EntryOut) (*gofs.Inode, syscall.Errno) {
	u := n.u
	u.mu.Lock()
	defer u.mu.Unlock()
	if errno := u.createIn(ctx, n, name, kindSymlink, 0, func(p string, _ uint32) error {
		return unix.Symlink(target, p)
	}); errno != 0 {
		return nil, errno
	}
	return u.lookupNew(ctx, n, name, out)
}

var _ = (gofs.NodeCreater)((*node)(nil))

// Create implements gofs.NodeCreater. The descriptor that creates the
// file is the one handed to the caller, and its fstat describes the new
// entry, so a create costs no second open and no second lookup.
func (n *node) Create(ctx context.Context, name string, flags uint32, mode uint32, out *fuse.EntryOut) (*gofs.Inode, gofs.FileHandle, uint32, syscall.Errno) {
	u := n.u
	u.mu.Lock()
	defer u.mu.Unlock()
	fd := -1
	oflags := int(openFlags(flags)) | unix.O_CREAT | unix.O_EXCL | unix.O_CLOEXEC | unix.O_NOFOLLOW
	if errno := u.createIn(ctx, n, name, kindFile, mode, func(p string, perm uint32) error {
		var err error
		fd, err = unix.Open(p, oflags, perm)
		return err
	}); errno != 0 {
		if fd >= 0 {
			unix.Close(fd)
		}
		return nil, nil, 0, errno
	}
	e := entry{upper: true}
	if err := unix.Fstat(fd, &e.upperSt); err != nil {
		unix.Close(fd)
		return nil, nil, 0, gofs.ToErrno(err)
	}
	ch := u.newNode(ctx, n, &e, out)
	fh, fflags := u.handle(ch.Operations().(*node), fd)
	return ch, fh, fflags, 0
}

var _ = (gofs.NodeLinker)((*node)(nil))

// Link implements gofs.NodeLinker: the target is copied up (with its
// other names) and linked in the upper layer.
func (n *node) Link(ctx context.Context, target gofs.InodeEmbedder, name string, out *fuse.EntryOut) (*gofs.Inode, syscall.Errno) {
	u := n.u
	tn, ok := target.(*node)
	if !ok {
		return nil, syscall.EXDEV
	}
	u.mu.Lock()
	defer u.mu.Unlock()
	if errno := u.copyUp(tn, false); errno != 0 {
		return nil, errno
	}
	src := u.upperPath(tn.rel())
	if errno := u.createIn(ctx, n, name, kindLink, 0, func(p string, _ uint32) error {
		return unix.Link(src, p)
	}); errno != 0 {
		return nil, errno
	}
	return u.lookupNew(ctx, n, name, out)
}
