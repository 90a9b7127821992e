package fs

import (
	"io/fs"
	"path"
	"path/filepath"
	"strings"
	"syscall"

	gofs "github.com/hanwen/go-fuse/v2/fs"
	"golang.org/x/sys/unix"

	"github.com/lamina-project/lamina/cow"
)

// Copy-up entry points. Each takes u.mu for writing (callers hold it),
// brings the parents of an object into the upper layer first, then the
// object itself through cow.CopyUp, which builds it in the work dir.

// parentOf returns n's parent node and n's name in it.
func parentOf(n *node) (*node, string) {
	name, p := n.Parent()
	if p == nil {
		return nil, ""
	}
	pn, _ := p.Operations().(*node)
	return pn, name
}

// copyUpDir makes sure directory n exists in the upper layer.
//
// Preconditions: u.mu is held for writing.
func (u *union) copyUpDir(n *node) syscall.Errno {
	if u.readOnly() {
		return syscall.EROFS
	}
	if n.upper {
		return 0
	}
	parent, name := parentOf(n)
	if parent == nil {
		return syscall.ENOENT
	}
	if errno := u.copyUpDir(parent); errno != 0 {
		return errno
	}
	if len(n.dirLowers) == 0 {
		return syscall.ENOENT
	}
	srcPath := u.srcPath(n.dirLowers[0])
	if errno := u.inDir(parent, func(dirfd int) error {
		return cow.CopyUp(srcPath, u.work, dirfd, name, false)
	}); errno != 0 {
		return errno
	}
	// A directory reached through a renamed parent keeps its name, so no
	// redirect is needed; its lower path follows from the parent's.
	n.upper = true
	u.recordOrigin(u.upperPath(parent.childRel(name)), n.ino)
	return 0
}

// recordOrigin maps the upper object at p to the inode number ino.
func (u *union) recordOrigin(p string, ino uint64) {
	var st unix.Stat_t
	if unix.Lstat(p, &st) == nil {
		u.inos.setOrigin(st.Ino, ino)
	}
}

// inDir runs f with an O_PATH descriptor of directory n's upper copy.
//
// Preconditions: n.upper.
func (u *union) inDir(n *node, f func(dirfd int) error) syscall.Errno {
	fd, err := unix.Open(u.upperPath(n.rel()), unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC|unix.O_NOFOLLOW, 0)
	if err != nil {
		return gofs.ToErrno(err)
	}
	defer unix.Close(fd)
	return errnoOf(f(fd))
}

// beginChange takes u.mu for writing, for a change to n that will copy
// it up. A lower regular file's data is copied first, without the lock
// (lower layers never change), so a large copy-up does not stall every
// other lookup; copyUp then only publishes it. Call end when done.
func (u *union) beginChange(n *node, noData bool) (end func()) {
	u.mu.RLock()
	if n.upper {
		// Nothing to copy, and changing an upper file in place changes
		// no name: the read lock keeps renames away.
		return u.mu.RUnlock
	}
	var srcPath string
	if !n.upper && n.lower != nil && !u.readOnly() {
		srcPath = u.srcPath(*n.lower)
	}
	u.mu.RUnlock()
	if srcPath == "" {
		u.mu.Lock()
		return u.mu.Unlock
	}
	n.cpMu.Lock()
	if !noData {
		u.mayBlock()
	}
	prep, err := cow.PrepareFile(srcPath, u.work, noData)
	u.mu.Lock()
	if err == nil && !n.upper && n.lower != nil {
		n.prep = prep // else copyUp copies under the lock, or has nothing to do
	}
	return func() {
		n.prep = nil
		u.mu.Unlock()
		if prep != nil {
			prep.Close()
		}
		n.cpMu.Unlock()
	}
}

// copyUp brings node n (any type) into the upper layer; with truncate a
// regular file's data is not copied (it is about to be truncated).
//
// Preconditions: u.mu is held for writing.
func (u *union) copyUp(n *node, truncate bool) syscall.Errno {
	if u.readOnly() {
		return syscall.EROFS
	}
	if n.upper {
		return 0
	}
	if n.lower == nil {
		return u.copyUpDir(n)
	}
	parent, name := parentOf(n)
	if parent == nil {
		return syscall.ENOENT
	}
	if errno := u.copyUpDir(parent); errno != 0 {
		return errno
	}
	srcPath := u.srcPath(*n.lower)
	st, err := u.lowerStat(*n.lower)
	if err != nil {
		return gofs.ToErrno(err)
	}
	prep := n.prep
	n.prep = nil
	if prep == nil && !truncate && st.Mode&unix.S_IFMT == unix.S_IFREG && st.Size > 0 {
		u.mayBlock() // the data is copied under the lock
	}
	if errno := u.inDir(parent, func(dirfd int) error {
		if prep != nil {
			return prep.Publish(dirfd, name)
		}
		return cow.CopyUp(srcPath, u.work, dirfd, name, truncate)
	}); errno != 0 {
		return errno
	}
	rel := parent.childRel(name)
	u.recordOrigin(u.upperPath(rel), n.ino)
	lower := *n.lower
	n.upper = true
	n.lower = nil
	if n.lowerBacked.Load() {
		u.supersede(n)
	}
	if st.Nlink > 1 && st.Mode&unix.S_IFMT != unix.S_IFDIR {
		u.linkUpSiblings(n, lower, st.Ino, rel)
	}
	return 0
}

// linkUpSiblings gives the other visible names of a hard-linked lower file
// the same upper copy, so the link survives copy-up as with overlay's
// index=on. The names are found by listing the lower layer once, then
// resolving each through the union to check it still shows this very
// file.
//
// Preconditions: u.mu is held for writing; n was just copied up to rel.
func (u *union) linkUpSiblings(n *node, lower src, lowerIno uint64, rel string) {
	for _, p := range u.layerPathsOf(lower.layer, lowerIno) {
		if p == rel {
			continue // the name just copied up
		}
		dir, name := path.Split(p)
		d, ok := u.upperDirPath(strings.TrimSuffix(dir, "/"))
		if !ok {
			continue
		}
		e, errno := u.resolveAt(d, name)
		if errno != 0 || e.upper || e.lower == nil || e.lower.layer != lower.layer || e.lowerSt.Ino != lowerIno {
			continue
		}
		_ = unix.Link(u.upperPath(rel), u.upperPath(d.join(name)))
	}
}

// upperDirPath copies up the directory at union path rel and its parents,
// walking from the root through the nodes the kernel knows and resolving
// the rest, and returns its state. Known nodes are updated as they are
// copied up.
//
// Preconditions: u.mu is held for writing.
func (u *union) upperDirPath(rel string) (dirState, bool) {
	cur := u.root
	if u.copyUpDir(cur) != 0 {
		return dirState{}, false
	}
	d := cur.dirState()
	for _, comp := range strings.Split(rel, "/") {
		if comp == "" {
			continue
		}
		if cur != nil {
			if ch := cur.GetChild(comp); ch != nil {
				if cn, ok := ch.Operations().(*node); ok && cn.lower == nil {
					if u.copyUpDir(cn) != 0 {
						return dirState{}, false
					}
					cur, d = cn, cn.dirState()
					continue
				}
			}
		}
		e, errno := u.resolveAt(d, comp)
		if errno != 0 || !e.isDir() {
			return dirState{}, false
		}
		next := dirState{rel: d.join(comp), upper: true, lowers: e.dirLowers}
		if e.opaque {
			next.lowers = nil
		}
		if !e.upper {
			srcPath := u.srcPath(e.dirLowers[0])
			if err := cow.CopyUp(srcPath, u.work, unix.AT_FDCWD, u.upperPath(next.rel), false); err != nil {
				return dirState{}, false
			}
			if st, err := u.lowerStat(e.dirLowers[0]); err == nil {
				u.recordOrigin(u.upperPath(next.rel), u.inos.fromStat(st.Dev, st.Ino))
			}
		}
		cur, d = nil, next
	}
	return d, true
}

// layerPathsOf returns the paths in lower layer j of the files with inode
// number ino, listing the layer once and keeping only hard-linked inodes.
func (u *union) layerPathsOf(j int, ino uint64) []string {
	u.scanMu.Lock()
	defer u.scanMu.Unlock()
	m, ok := u.scans[j]
	if !ok {
		u.mayBlock() // a walk of the whole layer
		m = map[uint64][]string{}
		root := u.lowers[j].root
		_ = filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
			if err != nil || d.IsDir() || !d.Type().IsRegular() {
				return nil
			}
			info, err := d.Info()
			if err != nil {
				return nil
			}
			st, ok := info.Sys().(*syscall.Stat_t)
			if !ok || st.Nlink < 2 {
				return nil
			}
			rel, _ := filepath.Rel(root, p)
			m[st.Ino] = append(m[st.Ino], rel)
			return nil
		})
		u.scans[j] = m
	}
	return m[ino]
}

// errnoOf converts an error from package cow or unix into an errno.
func errnoOf(err error) syscall.Errno {
	if err == nil {
		return 0
	}
	return gofs.ToErrno(unwrapErrno(err))
}
