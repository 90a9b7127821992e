package fs

import (
	"context"
	"os"
	"syscall"

	gofs "github.com/hanwen/go-fuse/v2/fs"
	"golang.org/x/sys/unix"

	"github.com/lamina-project/lamina/cow"
)

// removeName makes name in directory n disappear from the union: the
// upper object goes, and a whiteout takes its place when a lower layer
// still holds the name. Both happen in one rename, so a crash never shows
// the lower object again.
//
// Preconditions: u.mu is held for writing; the caller checked type and
// (for directories) emptiness.
func (u *union) removeName(n *node, name string, e *entry) (errno syscall.Errno) {
	if u.readOnly() {
		return syscall.EROFS
	}
	needWhiteout := u.lowerHas(n, name)
	if errno := u.copyUpDir(n); errno != 0 {
		return errno
	}
	p := u.upperPath(n.childRel(name))
	// Once the last name of an upper file is gone, its st_ino is free.
	if e.upper && e.upperSt.Mode&unix.S_IFMT != unix.S_IFDIR && e.upperSt.Nlink <= 1 {
		defer func() {
			if errno == 0 {
				u.inos.removed(e.upperSt.Dev, e.upperSt.Ino)
			}
		}()
	}
	if needWhiteout {
		return u.inDir(n, func(dirfd int) error { return cow.MakeWhiteout(u.work, dirfd, name) })
	}
	if !e.upper {
		return 0
	}
	if e.upperSt.Mode&unix.S_IFMT == unix.S_IFDIR {
		// Move the directory out of sight first, then empty it.
		tmp, err := tempName(u.work)
		if err != nil {
			return errnoOf(err)
		}
		if err := unix.Rename(p, tmp); err != nil {
			return errnoOf(err)
		}
		return errnoOf(os.RemoveAll(tmp))
	}
	return errnoOf(unix.Unlink(p))
}

// upLinkSet prepares the removal (by unlink or by rename over it) of
// name in n, resolved as e: when it is one name of a lower hard link, the
// whole set is copied up first (as overlay's index=on does), so its other
// names show one link less afterwards. e is resolved again.
//
// Preconditions: u.mu is held for writing.
func (u *union) upLinkSet(n *node, name string, e *entry) syscall.Errno {
	if e.upper || e.lower == nil || e.lowerSt.Nlink <= 1 {
		return 0
	}
	ch := n.childNode(name)
	if ch == nil {
		return 0
	}
	if errno := u.copyUp(ch, false); errno != 0 {
		return errno
	}
	var errno syscall.Errno
	*e, errno = u.resolve(n, name)
	return errno
}

var _ = (gofs.NodeUnlinker)((*node)(nil))

// Unlink implements gofs.NodeUnlinker.
func (n *node) Unlink(ctx context.Context, name string) syscall.Errno {
	u := n.u
	u.mu.Lock()
	defer u.mu.Unlock()
	e, errno := u.resolve(n, name)
	if errno != 0 {
		return errno
	}
	if e.isDir() {
		return syscall.EISDIR
	}
	if errno := u.upLinkSet(n, name, &e); errno != 0 {
		return errno
	}
	return u.removeName(n, name, &e)
}

var _ = (gofs.NodeRmdirer)((*node)(nil))

// Rmdir implements gofs.NodeRmdirer.
func (n *node) Rmdir(ctx context.Context, name string) syscall.Errno {
	u := n.u
	u.mu.Lock()
	defer u.mu.Unlock()
	e, errno := u.resolve(n, name)
	if errno != 0 {
		return errno
	}
	if !e.isDir() {
		return syscall.ENOTDIR
	}
	if errno := u.checkEmpty(n.dirState(), name, &e); errno != 0 {
		return errno
	}
	return u.removeName(n, name, &e)
}

// checkEmpty fails with ENOTEMPTY unless the directory e (name in d)
// shows no entries in the union.
//
// Preconditions: u.mu is held.
func (u *union) checkEmpty(d dirState, name string, e *entry) syscall.Errno {
	child := dirState{rel: d.join(name), upper: e.upper, lowers: e.dirLowers}
	if e.opaque {
		child.lowers = nil
	}
	empty, errno := u.isEmpty(child)
	if errno != 0 {
		return errno
	}
	if !empty {
		return syscall.ENOTEMPTY
	}
	return 0
}

var _ = (gofs.NodeRenamer)((*node)(nil))

// Rename implements gofs.NodeRenamer. Directories with lower contents are
// renamed by copying up the directory alone and recording where its lower
// contents are (overlay's redirect_dir=on), so no rename fails with EXDEV.
func (n *node) Rename(ctx context.Context, name string, newParent gofs.InodeEmbedder, newName string, flags uint32) (errno syscall.Errno) {
	u := n.u
	np, ok := newParent.(*node)
	if !ok {
		return syscall.EXDEV
	}
	if flags&^(unix.RENAME_NOREPLACE|unix.RENAME_EXCHANGE) != 0 || reservedName(newName) {
		return syscall.EINVAL
	}
	u.mu.Lock()
	defer u.mu.Unlock()
	if u.readOnly() {
		return syscall.EROFS
	}
	se, errno := u.resolve(n, name)
	if errno != 0 {
		return errno
	}
	de, derr := u.resolve(np, newName)
	if derr != 0 && derr != syscall.ENOENT {
		return derr
	}
	dstExists := derr == 0
	if flags&unix.RENAME_NOREPLACE != 0 && dstExists {
		return syscall.EEXIST
	}
	if flags&unix.RENAME_EXCHANGE != 0 {
		if !dstExists {
			return syscall.ENOENT
		}
		return u.exchange(n, name, &se, np, newName, &de)
	}
	if dstExists {
		if se.isDir() != de.isDir() {
			if se.isDir() {
				return syscall.ENOTDIR
			}
			return syscall.EISDIR
		}
		if de.isDir() {
			if errno := u.checkEmpty(np.dirState(), newName, &de); errno != 0 {
				return errno
			}
		}
		// Checked first, so that a refused rename copies nothing up.
		if errno := u.upLinkSet(np, newName, &de); errno != 0 {
			return errno
		}
	}
	sn := n.childNode(name)
	if sn == nil {
		return syscall.ENOENT
	}
	if errno := u.copyUp(sn, false); errno != 0 {
		return errno
	}
	if errno := u.copyUpDir(np); errno != 0 {
		return errno
	}
	oldPath := u.upperPath(n.childRel(name))
	newPath := u.upperPath(np.childRel(newName))
	if se.isDir() {
		if errno := u.markMovedDir(sn, oldPath, np, newName); errno != 0 {
			return errno
		}
	}
	// Clear what sits at the destination in the upper layer: the
	// whiteouts inside an empty-looking directory, or a whiteout where a
	// directory is to go (rename cannot put a directory over a file).
	var st unix.Stat_t
	if unix.Lstat(newPath, &st) == nil {
		switch {
		case st.Mode&unix.S_IFMT == unix.S_IFDIR:
			// The destination looks empty but may hold whiteouts: swap
			// in an empty opaque directory first (as overlay's
			// ovl_clear_empty does), so that at no moment, crash
			// included, does it show the lower entries it hid.
			old, errno := u.swapInEmptyDir(newPath, &st)
			if errno != 0 {
				return errno
			}
			if old != "" {
				defer os.RemoveAll(old)
			}
		case se.isDir() && cow.IsWhiteoutStat(&st):
			if err := unix.Unlink(newPath); err != nil {
				return errnoOf(err)
			}
		}
		if st.Mode&unix.S_IFMT != unix.S_IFDIR && st.Nlink <= 1 && !cow.IsWhiteoutStat(&st) {
			// The replaced file's st_ino is free once the rename is done.
			dev, ino := st.Dev, st.Ino
			defer func() {
				if errno == 0 {
					u.inos.removed(dev, ino)
				}
			}()
		}
	}
	var rflags uint
	if u.lowerHas(n, name) {
		rflags = unix.RENAME_WHITEOUT
	}
	if err := unix.Renameat2(unix.AT_FDCWD, oldPath, unix.AT_FDCWD, newPath, rflags); err != nil {
		if rflags == 0 || err != unix.EINVAL {
			return errnoOf(err)
		}
		// No RENAME_WHITEOUT on the upper filesystem: two steps.
		if err := unix.Rename(oldPath, newPath); err != nil {
			return errnoOf(err)
		}
		return u.inDir(n, func(dirfd int) error { return cow.MakeWhiteout(u.work, dirfd, name) })
	}
	return 0
}

// markMovedDir prepares the upper copy of directory d, about to move to
// newName in np: one with lower contents records where they are (a
// redirect, absolute from the layer roots); one without, landing on a
// name a lower layer holds, becomes opaque so that lower stays hidden.
//
// Preconditions: u.mu is held for writing; d is in the upper layer.
func (u *union) markMovedDir(d *node, upperPath string, np *node, newName string) syscall.Errno {
	if len(d.dirLowers) > 0 && !d.opaque {
		redirect := "/" + d.dirLowers[0].path
		if err := unix.Lsetxattr(upperPath, u.ns.RedirectName(), []byte(redirect), 0); err != nil {
			return errnoOf(err)
		}
		return 0
	}
	if u.lowerHas(np, newName) && !d.opaque {
		if err := cow.SetOpaque(u.ns, upperPath); err != nil {
			return errnoOf(err)
		}
		d.opaque = true
	}
	return 0
}

// exchange swaps two names (RENAME_EXCHANGE): both objects are copied up,
// moved directories are marked as for rename, and the upper layer swaps
// them atomically. Both names stay visible, so no whiteout is needed.
//
// Preconditions: u.mu is held for writing.
func (u *union) exchange(n *node, name string, se *entry, np *node, newName string, de *entry) syscall.Errno {
	a, b := n.childNode(name), np.childNode(newName)
	if a == nil || b == nil {
		return syscall.ENOENT
	}
	for _, x := range []*node{a, b} {
		if errno := u.copyUp(x, false); errno != 0 {
			return errno
		}
	}
	pa := u.upperPath(n.childRel(name))
	pb := u.upperPath(np.childRel(newName))
	if se.isDir() {
		if errno := u.markMovedDir(a, pa, np, newName); errno != 0 {
			return errno
		}
	}
	if de.isDir() {
		if errno := u.markMovedDir(b, pb, n, name); errno != 0 {
			return errno
		}
	}
	return errnoOf(unix.Renameat2(unix.AT_FDCWD, pa, unix.AT_FDCWD, pb, unix.RENAME_EXCHANGE))
}

// childNode returns the node of a child the kernel has looked up.
func (n *node) childNode(name string) *node {
	ch := n.GetChild(name)
	if ch == nil {
		return nil
	}
	cn, _ := ch.Operations().(*node)
	return cn
}

// swapInEmptyDir replaces the upper directory at p (which the union shows
// as empty) by an empty opaque one with the same metadata, in one
// exchange, and returns where the old one went (in the work dir), or ""
// when p was empty and is left as it is.
//
// Preconditions: u.mu is held for writing.
func (u *union) swapInEmptyDir(p string, st *unix.Stat_t) (string, syscall.Errno) {
	ents, err := os.ReadDir(p)
	if err != nil {
		return "", errnoOf(err)
	}
	if len(ents) == 0 {
		return "", 0
	}
	tmp, err := tempName(u.work)
	if err != nil {
		return "", errnoOf(err)
	}
	if err := unix.Mkdir(tmp, 0o700); err != nil {
		return "", errnoOf(err)
	}
	fail := func(err error) (string, syscall.Errno) {
		_ = os.RemoveAll(tmp)
		return "", errnoOf(err)
	}
	if err := cow.SetOpaque(u.ns, tmp); err != nil {
		return fail(err)
	}
	if err := cow.ApplyMeta(tmp, cow.MetaFromStat(st)); err != nil {
		return fail(err)
	}
	if err := unix.Renameat2(unix.AT_FDCWD, tmp, unix.AT_FDCWD, p, unix.RENAME_EXCHANGE); err != nil {
		return fail(err)
	}
	return tmp, 0
}
