package fs

import (
	"context"
	"path"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"

	gofs "github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
	"golang.org/x/sys/unix"

	"github.com/lamina-project/lamina/cow"
)

// src is an object in a lower layer: layer index and path in that layer.
type src struct {
	layer int
	path  string
}

// srcPath is where a lower object is on the host.
func (u *union) srcPath(s src) string { return u.lowers[s.layer].abs(s.path) }

// node is one object of the union. Its identity (and go-fuse Inode) is
// its inode number, so hard links share one node.
type node struct {
	gofs.Inode
	u *union

	// Guarded by u.mu.
	upper     bool  // exists in the upper layer at its visible path
	lower     *src  // non-directory: the lower file shown while not copied up
	dirLowers []src // directory: lower directories merged below, top first
	opaque    bool  // directory: upper copy hides all lower layers

	ino uint64 // constant

	// cpMu serializes copy-ups of this node whose data is copied
	// before u.mu is taken (beginChange); it is taken before u.mu.
	cpMu sync.Mutex
	// prep is a finished copy of the lower file waiting to be published
	// by copyUp. Guarded by u.mu.
	prep *cow.Prepared

	// lowerBacked is set once the kernel has been given this node's
	// lower file as passthrough backing. The kernel keeps one backing
	// file per inode (until some time after the last such open is
	// released), and would reuse it for any later passthrough open: after
	// copy-up that would send writes into the lower layer. So a node that
	// was ever lower-backed is superseded when copied up (see supersede)
	// and never opened again.
	lowerBacked atomic.Bool
	openMu      sync.Mutex         // guards open
	open        map[*file]struct{} // open files, for changes to a file with no name left

	// superseded: copied up after being lower-backed; opens answer
	// ESTALE, so the kernel looks the name up again and gets a new node.
	// Guarded by u.mu.
	superseded bool
}

// entry is the result of resolving one name in a directory.
type entry struct {
	upper     bool
	upperSt   unix.Stat_t
	lower     *src
	lowerSt   *unix.Stat_t
	dirLowers []src
	opaque    bool
}

func (e *entry) isDir() bool {
	if e.upper {
		return e.upperSt.Mode&unix.S_IFMT == unix.S_IFDIR
	}
	return e.lower == nil && len(e.dirLowers) > 0
}

// exists reports whether resolution found anything visible.
func (e *entry) exists() bool { return e.upper || e.lower != nil || len(e.dirLowers) > 0 }

// rel is the node's path relative to the union root.
func (n *node) rel() string { return n.Path(n.Root()) }

// childRel is the path of name in directory n.
func (n *node) childRel(name string) string {
	r := n.rel()
	if r == "" {
		return name
	}
	return r + "/" + name
}

// srcIn returns the source in lower layer j of a directory with the
// lower directories ls, if it has one.
func srcIn(ls []src, j int) (string, bool) {
	for _, s := range ls {
		if s.layer == j {
			return s.path, true
		}
		if s.layer > j {
			break
		}
	}
	return "", false
}

// dirState is what resolving a name needs of its directory.
type dirState struct {
	rel    string // path in the union
	upper  bool   // the directory exists in the upper layer
	lowers []src  // its lower directories, top first
}

func (n *node) dirState() dirState {
	return dirState{rel: n.rel(), upper: n.upper, lowers: n.dirLowers}
}

// join is the union path of name in d.
func (d dirState) join(name string) string {
	if d.rel == "" {
		return name
	}
	return d.rel + "/" + name
}

// resolve looks name up in directory n through all layers.
//
// Preconditions: u.mu is held (read or write).
func (u *union) resolve(n *node, name string) (entry, syscall.Errno) {
	return u.resolveAt(n.dirState(), name)
}

// resolveAt looks name up in the directory d through all layers.
//
// Preconditions: u.mu is held (read or write).
func (u *union) resolveAt(d dirState, name string) (entry, syscall.Errno) {
	var e entry
	redirect := ""
	if d.upper && !u.readOnly() {
		p := u.upperPath(d.join(name))
		err := unix.Lstat(p, &e.upperSt)
		switch {
		case err == nil && cow.IsWhiteoutStat(&e.upperSt):
			return e, syscall.ENOENT
		case err == nil:
			e.upper = true
			if e.upperSt.Mode&unix.S_IFMT != unix.S_IFDIR {
				return e, 0
			}
			if u.ns.IsOpaque(p) {
				e.opaque = true
				return e, 0
			}
			redirect = u.ns.Redirect(p)
		case err != syscall.ENOENT:
			return e, gofs.ToErrno(err)
		}
	}
	u.resolveLowers(d.lowers, name, redirect, &e)
	if !e.exists() {
		return e, syscall.ENOENT
	}
	return e, 0
}

// resolveLowers continues a lookup of name in the lower directories ls,
// starting from redirect when the upper directory carries one.
func (u *union) resolveLowers(ls []src, name, redirect string, e *entry) {
	for j, l := range u.lowers {
		var p string
		switch {
		case strings.HasPrefix(redirect, "/"):
			p = strings.TrimPrefix(path.Clean(redirect), "/")
		default:
			ps, ok := srcIn(ls, j)
			if !ok {
				continue
			}
			nm := name
			if redirect != "" {
				nm = redirect
			}
			p = path.Join(ps, nm)
		}
		dir, base := path.Split(p)
		dir = strings.TrimSuffix(dir, "/")
		di := l.lookedUp(dir)
		if di.missing {
			continue
		}
		if di.whiteouts[base] {
			return
		}
		le := di.entries[base]
		if le == nil {
			if di.opaque && redirect == "" {
				// n's own layer j directory is opaque: nothing below.
				return
			}
			continue
		}
		if le.typ != unix.S_IFDIR {
			if e.upper || len(e.dirLowers) > 0 {
				return // a non-directory below a directory is hidden
			}
			st, err := l.stat(dir, base, le)
			if err != nil {
				return
			}
			e.lower = &src{layer: j, path: p}
			e.lowerSt = st
			return
		}
		if e.upper && e.upperSt.Mode&unix.S_IFMT != unix.S_IFDIR {
			return
		}
		if len(e.dirLowers) == 0 && !e.upper {
			e.lowerSt, _ = l.stat(dir, base, le)
		}
		e.dirLowers = append(e.dirLowers, src{layer: j, path: p})
		sub := l.subdir(di, p)
		if sub.opaque {
			return
		}
		if sub.redirect != "" {
			if strings.HasPrefix(sub.redirect, "/") {
				redirect = sub.redirect
			} else {
				redirect = "/" + path.Join(dir, sub.redirect)
			}
		}
	}
}

// lowerHas reports whether a lower layer below directory n holds name, so
// that removing or renaming it away needs a whiteout.
//
// Preconditions: u.mu is held.
func (u *union) lowerHas(n *node, name string) bool {
	var e entry
	u.resolveLowers(n.dirLowers, name, "", &e)
	return e.exists()
}

// newNode makes (or finds, for hard links) the node for a resolved entry.
func (u *union) newNode(ctx context.Context, parent *node, e *entry, out *fuse.EntryOut) *gofs.Inode {
	ch := &node{u: u, upper: e.upper, lower: e.lower, dirLowers: e.dirLowers, opaque: e.opaque}
	var mode uint32
	if e.upper {
		ch.ino = u.inos.upper(e.upperSt.Dev, e.upperSt.Ino)
		mode = e.upperSt.Mode
		ch.lower = nil
		if mode&unix.S_IFMT != unix.S_IFDIR {
			ch.dirLowers = nil
		}
	} else if e.lower != nil {
		ch.ino = u.inos.fromStat(e.lowerSt.Dev, e.lowerSt.Ino)
		mode = e.lowerSt.Mode
	} else {
		if e.lowerSt == nil {
			e.lowerSt, _ = u.lowerStat(e.dirLowers[0])
		}
		if e.lowerSt != nil {
			ch.ino = u.inos.fromStat(e.lowerSt.Dev, e.lowerSt.Ino)
		}
		mode = unix.S_IFDIR
	}
	if out != nil {
		u.fillAttr(ch, e, &out.Attr)
		out.Ino = ch.ino
	}
	u.heap.Step(u.nodes.Add(1))
	return parent.NewInode(ctx, ch, gofs.StableAttr{Mode: mode & unix.S_IFMT, Ino: ch.ino, Gen: u.inos.generation(ch.ino)})
}

// lowerStat is the lstat of a lower object. Lower layers never change,
// so the stat the layer index took is served; the layer root, which no
// index lists, is stat'ed.
func (u *union) lowerStat(s src) (*unix.Stat_t, error) {
	if s.path != "" {
		dir, base := path.Split(s.path)
		dir = strings.TrimSuffix(dir, "/")
		l := u.lowers[s.layer]
		if le := l.dir(dir).entries[base]; le != nil {
			return l.stat(dir, base, le)
		}
	}
	var st unix.Stat_t
	if err := unix.Lstat(u.srcPath(s), &st); err != nil {
		return nil, err
	}
	return &st, nil
}

// fillAttr fills out from a resolved entry, with the node's inode number.
func (u *union) fillAttr(n *node, e *entry, out *fuse.Attr) {
	switch {
	case e.upper:
		out.FromStat(toSyscall(&e.upperSt))
	case e.lowerSt != nil:
		out.FromStat(toSyscall(e.lowerSt))
	case len(e.dirLowers) > 0:
		if st, err := u.lowerStat(e.dirLowers[0]); err == nil {
			out.FromStat(toSyscall(st))
		}
	}
	out.Ino = n.ino
	// Like overlay, a merged directory reports one link: counting the
	// subdirectories of every layer is not worth it, and 1 tells find(1)
	// not to rely on the count.
	if e.isDir() && ((e.upper && len(e.dirLowers) > 0) || len(e.dirLowers) > 1) {
		out.Nlink = 1
	}
}

func toSyscall(st *unix.Stat_t) *syscall.Stat_t {
	return (*syscall.Stat_t)(unsafePointer(st))
}

// entryOf rebuilds the entry of an existing node from its current state.
//
// Preconditions: u.mu is held.
func (u *union) entryOf(n *node) (entry, syscall.Errno) {
	e := entry{upper: n.upper, lower: n.lower, dirLowers: n.dirLowers, opaque: n.opaque}
	if n.upper {
		p := u.upperPath(n.rel())
		if err := unix.Lstat(p, &e.upperSt); err != nil {
			return e, gofs.ToErrno(err)
		}
		return e, 0
	}
	if n.lower != nil {
		st, err := u.lowerStat(*n.lower)
		if err != nil {
			return e, gofs.ToErrno(err)
		}
		e.lowerSt = st
	}
	if n.IsRoot() && len(n.dirLowers) == 0 && !n.upper {
		return e, syscall.ENOENT
	}
	return e, 0
}

var _ = (gofs.NodeLookuper)((*node)(nil))

// Lookup implements gofs.NodeLookuper.
func (n *node) Lookup(ctx context.Context, name string, out *fuse.EntryOut) (*gofs.Inode, syscall.Errno) {
	u := n.u
	// OCI whiteout files in lower layers are markers, never entries.
	if strings.HasPrefix(name, cow.OCIWhiteoutPrefix) && len(u.lowers) > 0 {
		return nil, syscall.ENOENT
	}
	u.mu.RLock()
	defer u.mu.RUnlock()
	e, errno := u.resolve(n, name)
	if errno != 0 {
		return nil, errno
	}
	return u.newNode(ctx, n, &e, out), 0
}

var _ = (gofs.NodeGetattrer)((*node)(nil))

// Getattr implements gofs.NodeGetattrer.
func (n *node) Getattr(ctx context.Context, f gofs.FileHandle, out *fuse.AttrOut) syscall.Errno {
	u := n.u
	u.mu.RLock()
	defer u.mu.RUnlock()
	var err error
	if n.withUpperFd(f, func(fd int) {
		// No path walk, and right even when the file has no name left.
		e := entry{upper: true, dirLowers: n.dirLowers}
		if err = unix.Fstat(fd, &e.upperSt); err == nil {
			u.fillAttr(n, &e, &out.Attr)
		}
	}) {
		return gofs.ToErrno(err)
	}
	e, errno := u.entryOf(n)
	if errno != 0 {
		// An open file whose last name is gone: its descriptor still
		// answers.
		fd, ok := fdOf(f)
		if !ok {
			return errno
		}
		if err := unix.Fstat(fd, &e.upperSt); err != nil {
			return gofs.ToErrno(err)
		}
		e = entry{upper: true, upperSt: e.upperSt}
	}
	u.fillAttr(n, &e, &out.Attr)
	if n.IsRoot() {
		out.Ino = 1
	}
	return 0
}

var _ = (gofs.NodeStatfser)((*node)(nil))

// Statfs implements gofs.NodeStatfser: the upper layer's filesystem, or
// the top lower layer's for a read-only union.
func (n *node) Statfs(ctx context.Context, out *fuse.StatfsOut) syscall.Errno {
	p := n.u.upper
	if p == "" {
		p = n.u.lowers[0].root
	}
	var st syscall.Statfs_t
	if err := syscall.Statfs(p, &st); err != nil {
		return gofs.ToErrno(err)
	}
	out.FromStatfsT(&st)
	return 0
}

var _ = (gofs.NodeReadlinker)((*node)(nil))

// Readlink implements gofs.NodeReadlinker.
func (n *node) Readlink(ctx context.Context) ([]byte, syscall.Errno) {
	n.u.mu.RLock()
	p := n.realPath()
	n.u.mu.RUnlock()
	buf := make([]byte, unix.PathMax)
	k, err := unix.Readlink(p, buf)
	if err != nil {
		return nil, gofs.ToErrno(err)
	}
	return buf[:k], 0
}

// realPath is where the object's current contents live: its upper copy,
// or its lower file or top lower directory.
//
// Preconditions: u.mu is held.
func (n *node) realPath() string {
	u := n.u
	switch {
	case n.upper:
		return u.upperPath(n.rel())
	case n.lower != nil:
		return u.srcPath(*n.lower)
	case len(n.dirLowers) > 0:
		return u.srcPath(n.dirLowers[0])
	}
	return u.upperPath(n.rel())
}
