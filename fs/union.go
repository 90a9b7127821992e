// Package fs is laminafs: a union of directory layers served over FUSE
// (go-fuse v2) with the semantics and on-disk format of the kernel's
// overlayfs, so the same lower/upper directories mount with laminafs,
// kernel overlay or fuse-overlayfs and show the same tree.
//
// Lookup goes through the layers top to bottom: the upper layer first,
// then the lower layers, stopping at whiteouts, opaque directories and
// non-directories. Lower layers are read-only and never change while
// mounted, so each lower directory is indexed once (index.go). Any change
// to a lower object copies it up into the upper layer first (copyup.go, via
// package cow). Removing a name that a lower layer still holds leaves a
// whiteout; renaming a directory with lower contents records a redirect,
// as overlay's redirect_dir=on does, so directory renames never fail with
// EXDEV. Hard links survive copy-up (all of a file's names move to the
// upper layer together), as with overlay's index=on.
//
// Locking: union.mu is the namespace lock. Operations that change what the
// upper layer holds (create, remove, rename, copy-up) take it for writing;
// lookups, getattr and readdir take it for reading. File data goes through
// file descriptors (and FUSE passthrough where the kernel has it) without
// it. A node's layer fields are guarded by union.mu.
package fs

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/hanwen/go-fuse/v2/fuse"
	"golang.org/x/sys/unix"

	"github.com/lamina-project/lamina/cow"
	"github.com/lamina-project/lamina/internal/hugeheap"
)

// Config says which directories make the union.
type Config struct {
	Lower []string // read-only layers, top first (overlay's lowerdir order)
	Upper string   // read-write layer; "" for a read-only union
	Work  string   // scratch space on the upper's filesystem
}

// union is the state shared by all nodes of one mount.
type union struct {
	mu     nsLock // namespace lock, see package doc
	lowers []*layerIndex
	upper  string
	work   string // <Work>/work: temp objects before they are renamed into place
	ns     cow.XattrNS
	inos   *inoMap
	root   *node
	// scans maps a lower layer to its inode → paths table, built the
	// first time a hard-linked file of that layer is copied up.
	scanMu sync.Mutex
	scans  map[int]map[uint64][]string
	// euid and egid are the server's own ids, the owner of what it makes.
	euid, egid int
	// server serves the union, once mounted; see mayBlock.
	server atomic.Pointer[fuse.Server]
	// nodes counts the nodes made, for heap: each is about 1 KiB of heap
	// (with go-fuse's Inode and the kernel-facing tables), and a walk of a
	// large tree makes tens of thousands in a row.
	nodes atomic.Int64
	heap  *hugeheap.Grower
}

// nsLock is the namespace lock. Each write lock starts a new epoch, so
// that what was read under an earlier read lock is known to be current as
// long as the epoch has not moved (see dirHandle.Lookup).
type nsLock struct {
	sync.RWMutex
	epoch atomic.Uint64
}

// Lock takes the lock for writing and starts a new epoch.
func (l *nsLock) Lock() {
	l.RWMutex.Lock()
	l.epoch.Add(1)
}

// mayBlock is called by a request handler before work that can take
// long (copying file data, listing a whole layer or a large directory):
// the server reads requests in the handling goroutine
// (fuse.MountOptions.InlineReader), so without this every other request
// would wait for it.
func (u *union) mayBlock() {
	if srv := u.server.Load(); srv != nil {
		srv.EnsureReader()
	}
}

// readOnly reports whether the union has no upper layer.
func (u *union) readOnly() bool { return u.upper == "" }

// upperPath is rel's path in the upper layer.
func (u *union) upperPath(rel string) string {
	if rel == "" {
		return u.upper
	}
	return u.upper + "/" + rel
}

// newUnion checks cfg and prepares the work directory.
func newUnion(cfg Config, opts MountOptions) (*union, error) {
	if len(cfg.Lower) == 0 && cfg.Upper == "" {
		return nil, errors.New("no layers: need lowerdir or upperdir")
	}
	if (cfg.Upper == "") != (cfg.Work == "") {
		return nil, errors.New("upperdir and workdir must be given together")
	}
	u := &union{ns: cow.DefaultNS(), scans: map[int]map[uint64][]string{}, euid: os.Geteuid(), egid: os.Getegid(), heap: hugeheap.New(opts.HugeHeapNow)}
	var devs []uint64
	check := func(what, p string) (string, error) {
		abs, err := filepath.Abs(p)
		if err != nil {
			return "", fmt.Errorf("%s %s: %w", what, p, err)
		}
		var st unix.Stat_t
		if err := unix.Stat(abs, &st); err != nil {
			return "", fmt.Errorf("%s %s: %w", what, p, err)
		}
		if st.Mode&unix.S_IFMT != unix.S_IFDIR {
			return "", fmt.Errorf("%s %s: %w", what, p, syscall.ENOTDIR)
		}
		if err := unix.Access(abs, unix.R_OK|unix.X_OK); err != nil {
			return "", fmt.Errorf("%s %s: %w", what, p, err)
		}
		devs = append(devs, st.Dev)
		return abs, nil
	}
	var lowerAbs []string
	ahead := &prefetcher{}
	for _, l := range cfg.Lower {
		abs, err := check("lowerdir", l)
		if err != nil {
			return nil, err
		}
		lowerAbs = append(lowerAbs, abs)
		l := newLayerIndex(u.ns, abs, devs[len(devs)-1], ahead)
		l.mayBlock = u.mayBlock
		u.lowers = append(u.lowers, l)
	}
	if cfg.Upper != "" {
		up, err := check("upperdir", cfg.Upper)
		if err != nil {
			return nil, err
		}
		upDev := devs[len(devs)-1]
		wk, err := check("workdir", cfg.Work)
		if err != nil {
			return nil, err
		}
		if devs[len(devs)-1] != upDev {
			return nil, fmt.Errorf("workdir %s and upperdir %s must be on the same filesystem", cfg.Work, cfg.Upper)
		}
		if err := unix.Access(up, unix.W_OK); err != nil {
			return nil, fmt.Errorf("upperdir %s: %w", cfg.Upper, err)
		}
		if inside(up, wk) || inside(wk, up) {
			return nil, fmt.Errorf("upperdir %s and workdir %s must not contain each other", cfg.Upper, cfg.Work)
		}
		for _, l := range lowerAbs {
			if inside(up, l) || inside(l, up) {
				return nil, fmt.Errorf("upperdir %s and lowerdir %s overlap", cfg.Upper, l)
			}
		}
		// One server per upper layer: a second would empty the first's
		// work dir and change the layer under a separate lock (kernel
		// overlay refuses this too, with EBUSY). The locks are held for
		// the life of the process; a server that just unmounted the same
		// layers may take a moment to exit, so wait a little.
		for _, d := range []string{wk, up} {
			if err := lockDir(d, 2*time.Second); err != nil {
				return nil, err
			}
		}
		u.upper = up
		// Like kernel overlay, keep temp objects in <workdir>/work and
		// empty it at mount: what is there was left by a crash and never
		// became visible.
		u.work = filepath.Join(wk, "work")
		if err := os.RemoveAll(u.work); err != nil {
			return nil, fmt.Errorf("clean workdir: %w", err)
		}
		if err := os.Mkdir(u.work, 0o700); err != nil {
			return nil, fmt.Errorf("workdir: %w", err)
		}
		// The upper layer's device counts first for inode numbers.
		devs = append([]uint64{upDev}, devs...)
	}
	u.inos = newInoMap(devs)
	return u, nil
}

// inside reports whether p is dir or below it.
func inside(p, dir string) bool {
	return p == dir || strings.HasPrefix(p, dir+"/")
}

// inoMap gives every object a stable inode number for the life of the
// mount. With all layers on one filesystem the real st_ino is unique and
// is used as is (as overlay does); otherwise the layer's filesystem index
// goes into the top bits (overlay's xino). A copied-up object keeps the
// number of its lower original: origin maps the upper st_ino to it.
type inoMap struct {
	devIdx map[uint64]uint64
	mu     sync.Mutex // guards origin and gen
	origin map[uint64]uint64
	gen    map[uint64]uint64 // bumped when an upper inode number is freed
}

func newInoMap(devs []uint64) *inoMap {
	m := &inoMap{devIdx: map[uint64]uint64{}, origin: map[uint64]uint64{}, gen: map[uint64]uint64{}}
	for _, d := range devs {
		if _, ok := m.devIdx[d]; !ok {
			m.devIdx[d] = uint64(len(m.devIdx))
		}
	}
	return m
}

// fromStat is the inode number of a real object.
func (m *inoMap) fromStat(dev, ino uint64) uint64 {
	if len(m.devIdx) <= 1 {
		return ino
	}
	return ino ^ (m.devIdx[dev] << 56)
}

// upper is the inode number of an upper-layer object.
func (m *inoMap) upper(dev, ino uint64) uint64 {
	m.mu.Lock()
	o, ok := m.origin[ino]
	m.mu.Unlock()
	if ok {
		return o
	}
	return m.fromStat(dev, ino)
}

// setOrigin records that the upper object with st_ino upperIno shows as ino.
func (m *inoMap) setOrigin(upperIno, ino uint64) {
	m.mu.Lock()
	m.origin[upperIno] = ino
	m.mu.Unlock()
}

// removed records that the upper object with device dev and st_ino
// upperIno lost its last name: its origin mapping goes, and the
// generation of its inode number moves on, so a new file that the upper
// filesystem gives the same st_ino is a new node, not the old one (which
// may still be open).
func (m *inoMap) removed(dev, upperIno uint64) {
	m.mu.Lock()
	defer m.mu.Unlock()
	ino, ok := m.origin[upperIno]
	if !ok {
		ino = m.fromStat(dev, upperIno)
	}
	delete(m.origin, upperIno)
	m.gen[ino]++
}

// bump moves inode number ino to a new generation.
func (m *inoMap) bump(ino uint64) {
	m.mu.Lock()
	m.gen[ino]++
	m.mu.Unlock()
}

// generation is the current generation of inode number ino.
func (m *inoMap) generation(ino uint64) uint64 {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.gen[ino]
}

// lockDir takes an exclusive flock on directory d, waiting up to wait.
func lockDir(d string, wait time.Duration) error {
	fd, err := unix.Open(d, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("lock %s: %w", d, err)
	}
	deadline := time.Now().Add(wait)
	for {
		err := unix.Flock(fd, unix.LOCK_EX|unix.LOCK_NB)
		if err == nil {
			return nil // fd stays open: it holds the lock
		}
		if err != unix.EWOULDBLOCK || time.Now().After(deadline) {
			unix.Close(fd)
			return fmt.Errorf("%s is in use by another mount: %w", d, syscall.EBUSY)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
