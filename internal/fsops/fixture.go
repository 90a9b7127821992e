package fsops

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"golang.org/x/sys/unix"
)

// T0 is the mtime and atime every fixture entry gets unless it says
// otherwise, so copy-up's keeping of times can be checked exactly.
const T0 = 1000000000 // 2001-09-09

// Spec describes one entry of a layer (or of an expected tree); Build
// makes the entries in order, so parents come before children.
type Spec struct {
	Path   string
	Type   Type   // TypeWhiteout makes a character device 0/0
	Data   string // files: content
	Size   int64  // files: if larger than DataAt+len(Data), extended with a hole
	DataAt int64  // files: offset of Data (a hole before it)
	Target string // symlinks; hard links (TypeFile with Link set)
	Link   string // a hard link to this earlier path instead of a new file
	Mode   uint32 // 0 means 0644 for files, 0755 for dirs
	UID    int
	GID    int
	Rdev   uint64
	Xattrs map[string]string
	Opaque bool  // dirs: trusted.overlay.opaque=y
	Mtime  int64 // seconds; 0 means T0
	// OCI whiteouts as some unpackers leave them: OCIWhiteout makes
	// ".wh.NAME" for Path's base name, OCIOpaque makes ".wh..wh..opq"
	// inside the directory Path.
	OCIWhiteout bool
	OCIOpaque   bool
}

// File is a regular file with content data.
func File(p, data string) Spec { return Spec{Path: p, Type: TypeFile, Data: data} }

// Dir is a directory.
func Dir(p string) Spec { return Spec{Path: p, Type: TypeDir} }

// OpaqueDir is a directory marked trusted.overlay.opaque=y.
func OpaqueDir(p string) Spec { return Spec{Path: p, Type: TypeDir, Opaque: true} }

// Symlink is a symbolic link to target.
func SymlinkTo(p, target string) Spec { return Spec{Path: p, Type: TypeSymlink, Target: target} }

// HardLink is a second name for the file at existing.
func HardLink(p, existing string) Spec { return Spec{Path: p, Type: TypeFile, Link: existing} }

// Whiteout is overlay's whiteout, a character device 0/0.
func Whiteout(p string) Spec { return Spec{Path: p, Type: TypeWhiteout} }

// Fifo is a named pipe.
func Fifo(p string) Spec { return Spec{Path: p, Type: TypeFifo} }

// Socket is a unix socket's name (made with mknod, no one listening).
func Socket(p string) Spec { return Spec{Path: p, Type: TypeSocket} }

// CharDev is a character device.
func CharDev(p string, major, minor uint32) Spec {
	return Spec{Path: p, Type: TypeChar, Rdev: unix.Mkdev(major, minor)}
}

// Sparse is a file of size bytes holding data at its start and a hole
// after it.
func Sparse(p, data string, size int64) Spec {
	return Spec{Path: p, Type: TypeFile, Data: data, Size: size}
}

// With returns s with mode, owner and xattrs set (mode 0 keeps the default).
func (s Spec) With(mode uint32, uid, gid int, xattrs ...string) Spec {
	if mode != 0 {
		s.Mode = mode
	}
	s.UID, s.GID = uid, gid
	if len(xattrs) > 0 {
		s.Xattrs = map[string]string{}
		for i := 0; i+1 < len(xattrs); i += 2 {
			s.Xattrs[xattrs[i]] = xattrs[i+1]
		}
	}
	return s
}

// At returns s with mtime sec.
func (s Spec) At(sec int64) Spec { s.Mtime = sec; return s }

// Build makes the entries in dir, which must exist. Directories get their
// times last, after their content is made.
func Build(dir string, specs []Spec) error {
	var dirs []Spec
	for _, s := range specs {
		if err := build(dir, s); err != nil {
			return fmt.Errorf("build %s in %s: %w", s.Path, dir, err)
		}
		if s.Type == TypeDir {
			dirs = append(dirs, s)
		}
	}
	for i := len(dirs) - 1; i >= 0; i-- {
		if err := setTime(filepath.Join(dir, dirs[i].Path), dirs[i].Mtime); err != nil {
			return err
		}
	}
	return nil
}

func build(dir string, s Spec) error {
	p := filepath.Join(dir, s.Path)
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		return err
	}
	if s.OCIWhiteout {
		p = filepath.Join(filepath.Dir(p), ".wh."+filepath.Base(p))
		return os.WriteFile(p, nil, 0o644)
	}
	mode := s.Mode
	switch s.Type {
	case TypeFile:
		if s.Link != "" {
			return os.Link(filepath.Join(dir, s.Link), p)
		}
		if mode == 0 {
			mode = 0o644
		}
		if err := writeAt(p, s.Data, s.DataAt); err != nil {
			return err
		}
		if s.Size > s.DataAt+int64(len(s.Data)) {
			if err := os.Truncate(p, s.Size); err != nil {
				return err
			}
		}
	case TypeDir:
		if mode == 0 {
			mode = 0o755
		}
		if err := os.Mkdir(p, 0o700); err != nil && !os.IsExist(err) {
			return err
		}
		if s.Opaque {
			if err := unix.Lsetxattr(p, "trusted.overlay.opaque", []byte("y"), 0); err != nil {
				return err
			}
		}
		if s.OCIOpaque {
			if err := os.WriteFile(filepath.Join(p, ".wh..wh..opq"), nil, 0o644); err != nil {
				return err
			}
		}
	case TypeSymlink:
		if err := os.Symlink(s.Target, p); err != nil {
			return err
		}
	case TypeWhiteout:
		return unix.Mknod(p, unix.S_IFCHR, 0)
	case TypeFifo, TypeSocket:
		if mode == 0 {
			mode = 0o644
		}
		t := uint32(unix.S_IFIFO)
		if s.Type == TypeSocket {
			t = unix.S_IFSOCK
		}
		if err := unix.Mknod(p, t|0o600, 0); err != nil {
			return err
		}
	case TypeChar, TypeBlock:
		if mode == 0 {
			mode = 0o644
		}
		t := uint32(unix.S_IFCHR)
		if s.Type == TypeBlock {
			t = unix.S_IFBLK
		}
		if err := unix.Mknod(p, t|0o600, int(s.Rdev)); err != nil {
			return err
		}
	default:
		return fmt.Errorf("cannot build a %q", s.Type)
	}
	if err := unix.Lchown(p, s.UID, s.GID); err != nil {
		return err
	}
	if s.Type != TypeSymlink {
		if err := unix.Chmod(p, mode); err != nil {
			return err
		}
	}
	for k, v := range s.Xattrs {
		if err := unix.Lsetxattr(p, k, []byte(v), 0); err != nil {
			return fmt.Errorf("setxattr %s: %w", k, err)
		}
	}
	if s.Type == TypeDir {
		return nil // timed at the end of Build
	}
	return setTime(p, s.Mtime)
}

func writeAt(p, data string, off int64) error {
	f, err := os.OpenFile(p, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return err
	}
	if _, err := f.WriteAt([]byte(data), off); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

func setTime(p string, sec int64) error {
	if sec == 0 {
		sec = T0
	}
	ts := unix.NsecToTimespec(sec * 1e9)
	return unix.UtimesNanoAt(unix.AT_FDCWD, p, []unix.Timespec{ts, ts}, unix.AT_SYMLINK_NOFOLLOW)
}

// BuildTree makes the entries in a fresh directory under parent and
// returns it, snapshotted: the form expected trees take in tests.
func BuildTree(parent string, specs []Spec, upper bool) (Tree, error) {
	d, err := os.MkdirTemp(parent, "want-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(d)
	if err := Build(d, specs); err != nil {
		return nil, err
	}
	if upper {
		return SnapshotUpper(d)
	}
	return Snapshot(d)
}

// Standard is a lower-layer fixture with something of every kind, for
// random operation sequences: nested dirs, files with content, owner,
// xattrs and holes, symlinks, a hard link pair, a fifo and a device.
// Layers[0] is the top. The names it uses are the names Gen picks from.
func Standard() [][]Spec {
	top := []Spec{
		Dir("d0"),
		File("d0/a", "top a\n"),
		Whiteout("d0/b"), // hides d0/b of the bottom layer
		OpaqueDir("d1"),
		File("d1/c", "opaque c\n").With(0o600, 1000, 1000, "user.k", "v1"),
		File("e", "top e\n"),
		SymlinkTo("s", "e"),
		Dir("d2"),
		Dir("d2/d0"),
		File("d2/d0/a", strings.Repeat("x", 5000)),
	}
	bottom := []Spec{
		Dir("d0").With(0o750, 0, 1000, "user.dir", "bottom"),
		File("d0/b", "bottom b\n"),
		File("d0/c", "bottom c\n").With(0o640, 1000, 1000, "trusted.t", "tv"),
		Dir("d1"),
		File("d1/a", "hidden by opaque\n"),
		Dir("d1/d2"),
		File("a", "bottom a\n"),
		HardLink("b", "a"),
		Sparse("c", "head", 3<<20),
		Fifo("d2/p"),
		CharDev("d2/null", 1, 3),
		Dir("d3"),
		Dir("d3/d0"),
		File("d3/d0/e", "deep\n").With(0o4755, 0, 0, "user.a", "1", "user.b", "2"),
		SymlinkTo("d3/s", "d0"),
		SymlinkTo("d3/dangling", "nowhere"),
	}
	return [][]Spec{top, bottom}
}

// Flatten merges layers (top first) as overlay shows them, for building
// expected trees by hand: an upper name hides everything below unless both
// are directories; whiteouts and opaque directories hide what is under
// them. OCI whiteout markers are not understood, and a hard link whose
// first name is hidden comes out as a file without content.
func Flatten(layers [][]Spec) []Spec {
	type node struct {
		spec   Spec
		hidden bool // whiteout, or opaque: nothing below shows
	}
	seen := map[string]node{}
	var order []string
	// hidden: a layer above holds p, or holds a proper ancestor of p
	// that is not a plain directory (a whiteout, a non-dir, an opaque dir).
	hidden := func(p string) bool {
		if _, ok := seen[p]; ok {
			return true
		}
		for q := filepath.Dir(p); q != "."; q = filepath.Dir(q) {
			if n, ok := seen[q]; ok && (n.hidden || n.spec.Type != TypeDir) {
				return true
			}
		}
		return false
	}
	for _, layer := range layers {
		var add []node
		var stop []string
		for _, s := range layer {
			if !hidden(s.Path) {
				add = append(add, node{spec: s, hidden: s.Type == TypeWhiteout || s.Opaque})
			} else if n, ok := seen[s.Path]; ok && n.spec.Type == TypeDir && s.Type != TypeDir {
				stop = append(stop, s.Path) // a non-dir ends the merge of the dir above
			}
		}
		for _, p := range stop {
			n := seen[p]
			n.hidden = true
			seen[p] = n
		}
		for _, n := range add {
			order = append(order, n.spec.Path)
			seen[n.spec.Path] = n
		}
	}
	var out []Spec
	for _, p := range order {
		n := seen[p]
		if n.spec.Type == TypeWhiteout {
			continue
		}
		s := n.spec
		s.Opaque = false
		if s.Link != "" {
			if _, ok := seen[s.Link]; !ok || seen[s.Link].spec.Type == TypeWhiteout {
				s.Link = ""
			}
		}
		out = append(out, s)
	}
	return out
}
