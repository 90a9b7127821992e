package fs

import (
	"context"
	"path"
	"syscall"

	gofs "github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
	"golang.org/x/sys/unix"

	"github.com/lamina-project/lamina/cow"
)

// listUpper reads the upper directory at p: its visible entries and the
// names it whites out.
func (u *union) listUpper(p string) (ents []fuse.DirEntry, hidden map[string]bool, errno syscall.Errno) {
	fd, err := unix.Open(p, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC|unix.O_NOFOLLOW, 0)
	if err != nil {
		return nil, nil, gofs.ToErrno(err)
	}
	defer unix.Close(fd)
	var dst unix.Stat_t
	if err := unix.Fstat(fd, &dst); err != nil {
		return nil, nil, gofs.ToErrno(err)
	}
	hidden = map[string]bool{}
	buf := make([]byte, 32*1024)
	for {
		n, err := unix.Getdents(fd, buf)
		if err != nil {
			return nil, nil, gofs.ToErrno(err)
		}
		if n <= 0 {
			break
		}
		for b := buf[:n]; len(b) > 0; {
			ino, reclen, typ, name := parseDirent(b)
			b = b[reclen:]
			if name == "." || name == ".." || name == "" {
				continue
			}
			mode := dtToMode(typ)
			if typ == unix.DT_CHR || typ == unix.DT_UNKNOWN {
				var st unix.Stat_t
				if unix.Fstatat(fd, name, &st, unix.AT_SYMLINK_NOFOLLOW) != nil {
					continue
				}
				if cow.IsWhiteoutStat(&st) {
					hidden[name] = true
					continue
				}
				mode = st.Mode & unix.S_IFMT
			}
			ents = append(ents, fuse.DirEntry{Name: name, Mode: mode, Ino: u.inos.upper(dst.Dev, ino)})
		}
	}
	return ents, hidden, 0
}

// lowerName says where a listed entry of a lower layer lives, so that a
// readdirplus can look it up without resolving the name again.
type lowerName struct {
	layer int
	dir   string  // its directory in that layer
	le    *lentry // nil for an upper entry
}

// merged lists directory d as the union shows it, after the entries
// head: the upper entries, then each lower layer's entries not already
// seen nor whited out above, in name order within each layer. from, if
// not nil, gets where each entry came from (the zero lowerName for head
// and upper entries).
//
// Preconditions: u.mu is held.
func (u *union) merged(d dirState, opaque bool, head []fuse.DirEntry, from *[]lowerName) ([]fuse.DirEntry, syscall.Errno) {
	var ups []fuse.DirEntry
	var upper map[string]bool // names the upper directory holds or whites out
	if d.upper && !u.readOnly() {
		ents, hidden, errno := u.listUpper(u.upperPath(d.rel))
		if errno != 0 {
			return nil, errno
		}
		upper = hidden
		for _, e := range ents {
			upper[e.Name] = true
		}
		ups = ents
	}
	var lowers []*dirIndex
	n := len(head) + len(ups)
	if !opaque {
		lowers = make([]*dirIndex, len(d.lowers))
		for i, s := range d.lowers {
			lowers[i] = u.lowers[s.layer].listed(s.path)
			n += len(lowers[i].names)
		}
	}
	out := append(append(make([]fuse.DirEntry, 0, n), head...), ups...)
	if from != nil {
		*from = make([]lowerName, len(out), n)
	}
	var above []*dirIndex // the listings of the lower layers already merged
	for i, di := range lowers {
		s, l := d.lowers[i], u.lowers[d.lowers[i].layer]
		if di.missing {
			continue
		}
		for _, name := range di.names {
			if upper[name] || shadowed(above, name) {
				continue
			}
			le := di.entries[name]
			out = append(out, fuse.DirEntry{Name: name, Mode: le.typ, Ino: u.inos.fromStat(l.dev, le.ino)})
			if from != nil {
				*from = append(*from, lowerName{layer: s.layer, dir: s.path, le: le})
			}
		}
		above = append(above, di)
	}
	return out, 0
}

// shadowed reports whether one of the lower listings ds holds or whites
// out name.
func shadowed(ds []*dirIndex, name string) bool {
	for _, d := range ds {
		if d.entries[name] != nil || d.whiteouts[name] {
			return true
		}
	}
	return false
}

// prefetchSubdirs starts reading, in the background, the lower listings
// of the subdirectories of d: whoever lists a directory is likely to
// walk into its subdirectories next (find, du, ls -R, a copy), and each
// listing costs a getdents and an fstatat per entry. One level only, so
// a listing never sets off more than its own subdirectories.
//
// Preconditions: u.mu is held.
func (u *union) prefetchSubdirs(d dirState) {
	for _, s := range d.lowers {
		l := u.lowers[s.layer]
		di := l.dir(s.path)
		var subs []string // in name order, the order a walk visits them in
		for _, name := range di.names {
			if di.entries[name].typ == unix.S_IFDIR {
				subs = append(subs, path.Join(s.path, name))
			}
		}
		if len(subs) > 0 {
			l.prefetch(subs)
		}
	}
}

// isEmpty reports whether directory d shows no entries.
//
// Preconditions: u.mu is held.
func (u *union) isEmpty(d dirState) (bool, syscall.Errno) {
	ents, errno := u.merged(d, false, nil, nil)
	return len(ents) == 0, errno
}

var _ = (gofs.NodeOpendirHandler)((*node)(nil))

// OpendirHandle implements gofs.NodeOpendirHandler.
func (n *node) OpendirHandle(ctx context.Context, flags uint32) (gofs.FileHandle, uint32, syscall.Errno) {
	return &dirHandle{n: n}, 0, 0
}

// dirHandle is an open directory. Its listing is made at the first read
// and kept, so offsets stay valid for seekdir and telldir, together with
// where each entry came from: the lookups of a readdirplus (Lookup) then
// need not resolve the names again.
type dirHandle struct {
	n     *node
	made  bool
	ents  []fuse.DirEntry
	from  []lowerName // where ents[i] came from
	epoch uint64      // u.mu's epoch when the listing was made
	pos   int         // the next entry to read
}

var (
	_ = (gofs.FileReaddirenter)((*dirHandle)(nil))
	_ = (gofs.FileSeekdirer)((*dirHandle)(nil))
	_ = (gofs.FileLookuper)((*dirHandle)(nil))
)

// list makes h's listing.
func (h *dirHandle) list() syscall.Errno {
	n, u := h.n, h.n.u
	u.mu.RLock()
	defer u.mu.RUnlock()
	parentIno := n.ino
	if _, p := n.Parent(); p != nil {
		parentIno = p.StableAttr().Ino
	}
	self := n.ino
	if n.IsRoot() {
		self, parentIno = 1, 1
	}
	dots := []fuse.DirEntry{
		{Name: ".", Mode: unix.S_IFDIR, Ino: self},
		{Name: "..", Mode: unix.S_IFDIR, Ino: parentIno},
	}
	d := n.dirState()
	ents, errno := u.merged(d, n.opaque, dots, &h.from)
	if errno != 0 {
		return errno
	}
	if !n.opaque {
		u.prefetchSubdirs(d)
	}
	// Names like OCI whiteouts are markers, never entries.
	h.ents = ents[:0]
	for i, e := range ents {
		if reservedName(e.Name) {
			continue
		}
		h.from[len(h.ents)] = h.from[i]
		e.Off = uint64(len(h.ents) + 1)
		h.ents = append(h.ents, e)
	}
	h.from = h.from[:len(h.ents)]
	h.epoch = u.mu.epoch.Load()
	h.made = true
	return 0
}

// Readdirent implements gofs.FileReaddirenter.
func (h *dirHandle) Readdirent(ctx context.Context) (*fuse.DirEntry, syscall.Errno) {
	if !h.made {
		if errno := h.list(); errno != 0 {
			return nil, errno
		}
	}
	if h.pos >= len(h.ents) {
		return nil, 0
	}
	h.pos++
	return &h.ents[h.pos-1], 0
}

// Seekdir implements gofs.FileSeekdirer: offset k is just after entry k.
func (h *dirHandle) Seekdir(ctx context.Context, off uint64) syscall.Errno {
	if !h.made {
		if errno := h.list(); errno != 0 {
			return errno
		}
	}
	h.pos = int(min(off, uint64(len(h.ents))))
	return 0
}

// Lookup implements gofs.FileLookuper, for readdirplus. A non-directory
// of a lower layer that the listing shows is what a lookup would find as
// long as nothing changed in the union since the listing was made (every
// change takes u.mu for writing, which starts a new epoch): it is made
// into a node from the listing's stat, with no new resolving. Anything
// else is looked up as usual.
func (h *dirHandle) Lookup(ctx context.Context, name string, out *fuse.EntryOut) (*gofs.Inode, syscall.Errno) {
	if h.pos > 0 && h.ents[h.pos-1].Name == name {
		if ch := h.lookupListed(ctx, h.from[h.pos-1], name, out); ch != nil {
			return ch, 0
		}
	}
	return h.n.Lookup(ctx, name, out)
}

// lookupListed makes the node of the listed lower non-directory name
// from s, or returns nil if the listing may be out of date or s is not
// such an entry.
func (h *dirHandle) lookupListed(ctx context.Context, s lowerName, name string, out *fuse.EntryOut) *gofs.Inode {
	if s.le == nil || s.le.typ == unix.S_IFDIR {
		return nil
	}
	u := h.n.u
	u.mu.RLock()
	defer u.mu.RUnlock()
	if u.mu.epoch.Load() != h.epoch {
		return nil
	}
	st, err := u.lowers[s.layer].stat(s.dir, name, s.le)
	if err != nil {
		return nil
	}
	e := entry{lower: &src{layer: s.layer, path: path.Join(s.dir, name)}, lowerSt: st}
	return u.newNode(ctx, h.n, &e, out)
}
