package fs

import (
	"path"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/lamina-project/lamina/cow"
)

// Lower layers never change while mounted, so each lower directory is
// read once, the first time the union looks into it, and kept as a
// dirIndex: a lookup of a name in a lower layer is then a map hit rather
// than an lstat, and whiteouts in both dialects (kernel char 0/0 and OCI
// ".wh.NAME") and the OCI opaque marker are found in the same pass.
//
// A listing is read in two steps. The first (fill) takes the names and
// types getdents gives, and is all a lookup through the directory needs;
// the second, once the directory is listed for the kernel (listed), a few
// names in it are looked up (lookedUp) or it is looked up in a directory
// that was listed (subdir), takes the lstat of every entry, which
// readdirplus and getattr want, in the background (prefetcher): on a cold
// cache it is most of the cost of a listing, and a walk (find, du, a stat of every
// file) would otherwise wait for all of a directory's subdirectories to
// be stat'ed before it could look any of them up. Whoever wants an
// entry's stat before the background gets to it takes it itself
// (layerIndex.stat).
//
// Invariant: a dirIndex is immutable once published; the lazily filled
// stat cache of an entry is written once, atomically.

// dirIndex is one lower directory's listing.
type dirIndex struct {
	ready     chan struct{} // closed once the fields below are filled
	missing   bool          // the directory does not exist (or is not a directory) in this layer
	opaque    bool          // overlay opaque xattr or OCI ".wh..wh..opq"
	redirect  string
	entries   map[string]*lentry
	names     []string // the keys of entries, sorted
	whiteouts map[string]bool
	statted   atomic.Bool  // the stat of its entries is queued or done (prefetcher.stat)
	lookups   atomic.Int32 // lookups of names in it so far (lookedUp)
	listed    atomic.Bool  // it was listed for the kernel (listed)
}

// lentry is one name in a lower directory.
type lentry struct {
	typ uint32 // S_IFMT bits
	ino uint64 // d_ino from getdents
	st  atomic.Pointer[unix.Stat_t]
}

// layerIndex caches the listings of one lower layer.
type layerIndex struct {
	ns   cow.XattrNS // whose opaque and redirect markers count
	root string
	dev  uint64     // st_dev of the layer root
	mu   sync.Mutex // guards dirs
	dirs map[string]*dirIndex
	// mayBlock, if set, is called before a listing that takes more than
	// one getdents (see union.mayBlock).
	mayBlock func()
	// ahead reads listings and stats entries in the background.
	ahead *prefetcher
}

func newLayerIndex(ns cow.XattrNS, root string, dev uint64, ahead *prefetcher) *layerIndex {
	return &layerIndex{ns: ns, root: root, dev: dev, dirs: make(map[string]*dirIndex), ahead: ahead}
}

// abs is the absolute path of rel ("" is the layer root) in the layer.
func (l *layerIndex) abs(rel string) string {
	if rel == "" {
		return l.root
	}
	return l.root + "/" + rel
}

// dir returns the listing of the directory rel, reading it on first use;
// a second caller waits for the first one's reading.
func (l *layerIndex) dir(rel string) *dirIndex {
	d, mine := l.claim(rel)
	if mine {
		l.fill(d, rel, l.mayBlock)
		close(d.ready)
	} else {
		<-d.ready
	}
	return d
}

// listed is dir for a listing the kernel asked for (readdir), which then
// wants the stat of every entry: it is started in the background, first
// in line.
func (l *layerIndex) listed(rel string) *dirIndex {
	d := l.dir(rel)
	d.listed.Store(true)
	l.ahead.stat(l, rel, d, true)
	return d
}

// subdir is dir for the directory rel, a subdirectory just looked up in
// parent. When parent was listed for the kernel, a walk is under way and
// is likely to list rel next: the stat of its entries starts now, first
// in line, as its listing would start it.
func (l *layerIndex) subdir(parent *dirIndex, rel string) *dirIndex {
	d := l.dir(rel)
	if parent.listed.Load() {
		l.ahead.stat(l, rel, d, true)
	}
	return d
}

// lookedUp is dir for a lookup of a name in the directory rel. The
// lookupsBeforeStat-th lookup in a directory starts the stat of its
// entries in the background, as a listing does: a walk or a build looks
// up many names of a directory, each wanting its stat. The first few do
// not: the names looked up in /bin when a container's command starts
// (busybox's: the applet, then the binary its symlink names) are no
// reason to lstat the hundreds of names beside them, on a CPU the start
// needs.
func (l *layerIndex) lookedUp(rel string) *dirIndex {
	d := l.dir(rel)
	if d.lookups.Add(1) == lookupsBeforeStat {
		l.ahead.stat(l, rel, d, true)
	}
	return d
}

// lookupsBeforeStat is how many lookups in a directory start the stat of
// its entries (lookedUp).
const lookupsBeforeStat = 4

// warm reads, in every lower layer, the listings of the directories along
// paths (the root and each path's parents, from the top down): what the
// lookups of those paths will ask the layer indexes for. A listing someone
// else is reading is not waited for.
func (u *union) warm(paths []string) {
	seen := map[string]bool{"": true}
	dirs := []string{""}
	for _, p := range paths {
		p = strings.Trim(path.Clean("/"+p), "/")
		var up []string
		for d := path.Dir(p); d != "." && d != "" && !seen[d]; d = path.Dir(d) {
			seen[d] = true
			up = append(up, d)
		}
		for i := len(up) - 1; i >= 0; i-- {
			dirs = append(dirs, up[i])
		}
	}
	for _, l := range u.lowers {
		for _, d := range dirs {
			l.ahead.read(listTask{l: l, rel: d}) // read ahead, not asked for: no stats
		}
	}
}

// claim returns rel's listing, and whether the caller made it and must
// fill it and close its ready channel.
func (l *layerIndex) claim(rel string) (*dirIndex, bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if d := l.dirs[rel]; d != nil {
		return d, false
	}
	d := &dirIndex{ready: make(chan struct{})}
	l.dirs[rel] = d
	return d, true
}

// prefetch reads the listings of the directories rels of this layer that
// are not read yet, and then stats their entries, in the background (see
// prefetcher).
func (l *layerIndex) prefetch(rels []string) {
	l.ahead.list(l, rels)
}

// fill lists the directory rel into d with getdents, classifying
// whiteouts. mayBlock, if set, is called before a listing that takes
// more than one getdents.
func (l *layerIndex) fill(d *dirIndex, rel string, mayBlock func()) {
	p := l.abs(rel)
	fd, err := unix.Open(p, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC|unix.O_NOFOLLOW, 0)
	if err != nil {
		d.missing = true
		return
	}
	defer unix.Close(fd)
	d.entries, d.whiteouts = make(map[string]*lentry), make(map[string]bool)
	d.opaque = l.ns.IsOpaque(p)
	d.redirect = l.ns.Redirect(p)
	buf := make([]byte, 32*1024)
	for i := 0; ; i++ {
		if i == 1 && mayBlock != nil {
			mayBlock() // a large directory
		}
		n, err := unix.Getdents(fd, buf)
		if err != nil || n <= 0 {
			break
		}
		for b := buf[:n]; len(b) > 0; {
			ino, reclen, typ, name := parseDirent(b)
			b = b[reclen:]
			if name == "." || name == ".." || reclen == 0 {
				continue
			}
			d.add(fd, name, ino, typ)
		}
	}
	// A name with both an entry and an OCI whiteout in the same layer is
	// a malformed layer; the whiteout wins, as in containerd's unpacker.
	for w := range d.whiteouts {
		delete(d.entries, w)
	}
	d.names = make([]string, 0, len(d.entries))
	for name := range d.entries {
		d.names = append(d.names, name)
	}
	sort.Strings(d.names)
}

// add enters one name that getdents returned on fd into d. Only a
// character device (perhaps a whiteout) or an entry of unknown type is
// stat'ed here; the type of the others is the d_type getdents gave.
func (d *dirIndex) add(fd int, name string, ino uint64, dt uint8) {
	if strings.HasPrefix(name, cow.OCIWhiteoutPrefix) {
		if name == cow.OCIOpaqueMarker {
			d.opaque = true
		} else if w := name[len(cow.OCIWhiteoutPrefix):]; w != "" {
			d.whiteouts[w] = true
		}
		return
	}
	e := &lentry{ino: ino, typ: dtToMode(dt)}
	if dt == unix.DT_CHR || e.typ == 0 {
		var st unix.Stat_t
		if unix.Fstatat(fd, name, &st, unix.AT_SYMLINK_NOFOLLOW) != nil {
			return
		}
		if cow.IsWhiteoutStat(&st) {
			d.whiteouts[name] = true
			return
		}
		e.typ = st.Mode & unix.S_IFMT
		e.st.Store(&st)
	}
	d.entries[name] = e
}

// stat returns the (cached) lstat of the entry name in directory rel.
func (l *layerIndex) stat(rel, name string, e *lentry) (*unix.Stat_t, error) {
	if st := e.st.Load(); st != nil {
		return st, nil
	}
	var st unix.Stat_t
	if err := unix.Lstat(l.abs(path.Join(rel, name)), &st); err != nil {
		return nil, err
	}
	e.st.CompareAndSwap(nil, &st)
	return e.st.Load(), nil
}

// parseDirent decodes one linux_dirent64 record.
func parseDirent(b []byte) (ino uint64, reclen int, typ uint8, name string) {
	if len(b) < 19 {
		return 0, len(b), 0, ""
	}
	ino = *(*uint64)(unsafe.Pointer(&b[0]))
	reclen = int(*(*uint16)(unsafe.Pointer(&b[16])))
	if reclen > len(b) || reclen < 19 {
		return 0, len(b), 0, ""
	}
	typ = b[18]
	nb := b[19:reclen]
	for i, c := range nb {
		if c == 0 {
			nb = nb[:i]
			break
		}
	}
	return ino, reclen, typ, string(nb)
}

func dtToMode(t uint8) uint32 {
	switch t {
	case unix.DT_DIR:
		return unix.S_IFDIR
	case unix.DT_REG:
		return unix.S_IFREG
	case unix.DT_LNK:
		return unix.S_IFLNK
	case unix.DT_FIFO:
		return unix.S_IFIFO
	case unix.DT_SOCK:
		return unix.S_IFSOCK
	case unix.DT_CHR:
		return unix.S_IFCHR
	case unix.DT_BLK:
		return unix.S_IFBLK
	}
	return 0
}
