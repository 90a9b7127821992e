package fs

import (
	"context"
	"path"
	"sort"
	"strings"
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

// merged lists directory d as the union shows it: the upper entries, then
// each lower layer's entries not already seen nor whited out above, in
// name order within each layer.
//
// Preconditions: u.mu is held.
func (u *union) merged(d dirState, opaque bool) ([]fuse.DirEntry, syscall.Errno) {
	var out []fuse.DirEntry
	seen := map[string]bool{}
	if d.upper && !u.readOnly() {
		ents, hidden, errno := u.listUpper(u.upperPath(d.rel))
		if errno != 0 {
			return nil, errno
		}
		for _, e := range ents {
			seen[e.Name] = true
		}
		for name := range hidden {
			seen[name] = true
		}
		out = ents
	}
	if opaque {
		return out, 0
	}
	for _, s := range d.lowers {
		l := u.lowers[s.layer]
		di := l.dir(s.path)
		if di.missing {
			continue
		}
		names := make([]string, 0, len(di.entries))
		for name := range di.entries {
			if !seen[name] {
				names = append(names, name)
			}
		}
		sort.Strings(names)
		for _, name := range names {
			le := di.entries[name]
			out = append(out, fuse.DirEntry{Name: name, Mode: le.typ, Ino: u.inos.fromStat(l.dev, le.ino)})
		}
		for _, name := range names {
			seen[name] = true
		}
		for name := range di.whiteouts {
			seen[name] = true
		}
	}
	return out, 0
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
		var subs []string
		for name, le := range di.entries {
			if le.typ == unix.S_IFDIR {
				subs = append(subs, path.Join(s.path, name))
			}
		}
		if len(subs) > 0 {
			sort.Strings(subs) // the order a walk visits them in
			l.prefetch(subs)
		}
	}
}

// isEmpty reports whether directory d shows no entries.
//
// Preconditions: u.mu is held.
func (u *union) isEmpty(d dirState) (bool, syscall.Errno) {
	ents, errno := u.merged(d, false)
	return len(ents) == 0, errno
}

var _ = (gofs.NodeReaddirer)((*node)(nil))

// Readdir implements gofs.NodeReaddirer. The listing is made once per
// open directory, so offsets stay valid for seekdir and telldir.
func (n *node) Readdir(ctx context.Context) (gofs.DirStream, syscall.Errno) {
	u := n.u
	u.mu.RLock()
	defer u.mu.RUnlock()
	ents, errno := u.merged(n.dirState(), n.opaque)
	if errno != 0 {
		return nil, errno
	}
	if !n.opaque {
		u.prefetchSubdirs(n.dirState())
	}
	parentIno := n.ino
	if _, p := n.Parent(); p != nil {
		parentIno = p.StableAttr().Ino
	}
	self := n.ino
	if n.IsRoot() {
		self, parentIno = 1, 1
	}
	all := make([]fuse.DirEntry, 0, len(ents)+2)
	all = append(all,
		fuse.DirEntry{Name: ".", Mode: unix.S_IFDIR, Ino: self},
		fuse.DirEntry{Name: "..", Mode: unix.S_IFDIR, Ino: parentIno})
	for _, e := range ents {
		if strings.HasPrefix(e.Name, cow.OCIWhiteoutPrefix) {
			continue
		}
		all = append(all, e)
	}
	for i := range all {
		all[i].Off = uint64(i + 1)
	}
	return &dirStream{ents: all}, 0
}

// dirStream serves a fixed listing with seekable offsets.
type dirStream struct {
	ents []fuse.DirEntry
	pos  int
}

func (s *dirStream) HasNext() bool { return s.pos < len(s.ents) }

func (s *dirStream) Next() (fuse.DirEntry, syscall.Errno) {
	e := s.ents[s.pos]
	s.pos++
	return e, 0
}

func (s *dirStream) Close() {}

// Seekdir implements gofs.FileSeekdirer: offset k is just after entry k.
func (s *dirStream) Seekdir(ctx context.Context, off uint64) syscall.Errno {
	if off > uint64(len(s.ents)) {
		off = uint64(len(s.ents))
	}
	s.pos = int(off)
	return 0
}
