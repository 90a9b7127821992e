package layerstore

import (
	"archive/tar"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// OCI whiteout names (image-spec layer.md).
const (
	whiteoutPrefix = ".wh."
	whiteoutMeta   = ".wh..wh."
	whiteoutOpaque = ".wh..wh..opq"
)

// kind is what a path in the layer being unpacked is.
type kind uint8

const (
	kindImplicitDir kind = iota + 1 // made because a child needed it
	kindDir
	kindFile
	kindSymlink
	kindOther // device, fifo
	kindWhiteout
)

// unpacker writes one layer tar into dir in kernel overlay format.
//
// Safety rests on one invariant: dir starts empty and private, and seen
// records every path made in it. So the tree on disk is exactly seen, and a
// path is safe to use as a plain string once none of its ancestors is a
// symlink in seen — no tar entry can lead a write outside dir, and no
// filesystem lookup has to be trusted.
type unpacker struct {
	dir      string
	seen     map[string]kind
	dirs     map[string]*tar.Header // explicit dir entries, for final metadata
	root     bool                   // running as root: chown, devices, trusted xattrs
	opaqueX  string                 // xattr marking an opaque dir
	size     int64                  // bytes of regular file data
	max      int64                  // bound on size: sparse entries expand beyond the stream
	buf      []byte
	implicit time.Time
}

func newUnpacker(dir string, max int64) *unpacker {
	u := &unpacker{
		dir:      dir,
		max:      max,
		seen:     map[string]kind{".": kindDir},
		dirs:     map[string]*tar.Header{},
		root:     os.Geteuid() == 0,
		buf:      make([]byte, 1<<20),
		implicit: time.Now(),
	}
	u.opaqueX = OpaqueXattr()
	return u
}

// OpaqueXattr is the xattr that marks an opaque directory in a layer dir:
// trusted.overlay.opaque as root, user.overlay.opaque otherwise (what kernel
// overlay reads with the userxattr option, and fuse-overlayfs rootless).
func OpaqueXattr() string {
	if os.Geteuid() == 0 {
		return "trusted.overlay.opaque"
	}
	return "user.overlay.opaque"
}

func bad(name, format string, a ...any) error {
	return fmt.Errorf("%w: entry %q: %s", ErrInvalidArchive, name, fmt.Sprintf(format, a...))
}

// cleanName turns a tar entry name into a clean path relative to the layer
// root, refusing absolute paths and any ".." component.
func cleanName(name string) (string, error) {
	if name == "" || strings.ContainsRune(name, 0) {
		return "", bad(name, "empty name or NUL byte")
	}
	if strings.HasPrefix(name, "/") {
		return "", bad(name, "absolute path")
	}
	for _, c := range strings.Split(name, "/") {
		if c == ".." {
			return "", bad(name, "path escapes the layer (..)")
		}
	}
	return path.Clean(name), nil
}

// unpack reads tr to its end.
func (u *unpacker) unpack(tr *tar.Reader) error {
	for {
		hdr, err := tr.Next()
		if err == io.EOF {
			break
		}
		if errors.Is(err, io.ErrUnexpectedEOF) {
			return fmt.Errorf("%w: truncated tar", ErrInvalidArchive)
		}
		if err != nil {
			return fmt.Errorf("%w: read tar: %v", ErrInvalidArchive, err)
		}
		if err := u.entry(tr, hdr); err != nil {
			return err
		}
	}
	return u.finishDirs()
}

// parentOK makes sure every ancestor of p is a directory (creating missing
// ones) and none is a symlink.
func (u *unpacker) parentOK(name, p string) error {
	dir := path.Dir(p)
	if dir == "." {
		return nil
	}
	parts := strings.Split(dir, "/")
	for i := range parts {
		a := strings.Join(parts[:i+1], "/")
		switch u.seen[a] {
		case kindDir, kindImplicitDir:
			continue
		case 0:
			if err := os.Mkdir(filepath.Join(u.dir, a), 0o755); err != nil {
				return fmt.Errorf("unpack %s: %w", a, err)
			}
			u.seen[a] = kindImplicitDir
		case kindSymlink:
			return bad(name, "path goes through symlink %q", a)
		default:
			return bad(name, "parent %q is not a directory", a)
		}
	}
	return nil
}

func (u *unpacker) entry(tr *tar.Reader, hdr *tar.Header) error {
	switch hdr.Typeflag {
	case tar.TypeXGlobalHeader:
		return nil
	}
	p, err := cleanName(hdr.Name)
	if err != nil {
		return err
	}
	parts := strings.Split(p, "/")
	for i, c := range parts {
		if strings.HasPrefix(c, whiteoutMeta) && c != whiteoutOpaque {
			return nil // aufs bookkeeping (.wh..wh.plnk/...): not content
		}
		if i < len(parts)-1 && strings.HasPrefix(c, whiteoutPrefix) {
			return bad(hdr.Name, "path goes through whiteout %q", c)
		}
	}
	if err := u.parentOK(hdr.Name, p); err != nil {
		return err
	}
	base := path.Base(p)
	if strings.HasPrefix(base, whiteoutPrefix) {
		return u.whiteout(hdr.Name, p, base)
	}
	full := filepath.Join(u.dir, p)
	if p == "." && hdr.Typeflag != tar.TypeDir {
		return bad(hdr.Name, "layer root must be a directory")
	}
	if k, dup := u.seen[p]; dup {
		// A directory may be listed twice (tar c . ./sub does it); any
		// other repeat is ambiguous about which entry wins, so refuse it.
		if !(hdr.Typeflag == tar.TypeDir && (k == kindDir || k == kindImplicitDir)) {
			return bad(hdr.Name, "duplicate or conflicting entry")
		}
	}
	switch hdr.Typeflag {
	case tar.TypeDir:
		if u.seen[p] == 0 {
			if err := os.Mkdir(full, 0o755); err != nil {
				return fmt.Errorf("unpack %s: %w", p, err)
			}
		}
		u.seen[p] = kindDir
		u.dirs[p] = hdr
		return u.xattrs(hdr, full)
	case tar.TypeReg, tar.TypeGNUSparse: // archive/tar reports old '\x00' files as TypeReg
		if err := u.file(tr, hdr, full); err != nil {
			return err
		}
		u.seen[p] = kindFile
	case tar.TypeSymlink:
		if hdr.Linkname == "" || strings.ContainsRune(hdr.Linkname, 0) {
			return bad(hdr.Name, "empty symlink target")
		}
		if err := os.Symlink(hdr.Linkname, full); err != nil {
			return fmt.Errorf("unpack %s: %w", p, err)
		}
		u.seen[p] = kindSymlink
	case tar.TypeLink:
		t, err := cleanName(hdr.Linkname)
		if err != nil {
			return bad(hdr.Name, "hard link target: %v", err)
		}
		k := u.seen[t]
		switch k {
		case kindFile, kindSymlink, kindOther:
		case 0:
			return bad(hdr.Name, "hard link to %q, which is not (yet) in the layer", hdr.Linkname)
		default:
			return bad(hdr.Name, "hard link to %q, which is not a file", hdr.Linkname)
		}
		if err := unix.Linkat(unix.AT_FDCWD, filepath.Join(u.dir, t), unix.AT_FDCWD, full, 0); err != nil {
			return fmt.Errorf("unpack %s: link: %w", p, err)
		}
		u.seen[p] = k
		return nil // a link shares its target's metadata
	case tar.TypeChar, tar.TypeBlock, tar.TypeFifo:
		mode := uint32(unix.S_IFIFO)
		switch hdr.Typeflag {
		case tar.TypeChar:
			mode = unix.S_IFCHR
		case tar.TypeBlock:
			mode = unix.S_IFBLK
		}
		dev := int(unix.Mkdev(uint32(hdr.Devmajor), uint32(hdr.Devminor)))
		if err := unix.Mknod(full, mode|uint32(hdr.Mode&0o7777), dev); err != nil {
			if !u.root && errors.Is(err, unix.EPERM) {
				return nil // rootless: devices are skipped, as docker does
			}
			return fmt.Errorf("unpack %s: mknod: %w", p, err)
		}
		u.seen[p] = kindOther
	default:
		return bad(hdr.Name, "unsupported entry type %q", string(hdr.Typeflag))
	}
	return u.meta(hdr, full)
}

// whiteout converts an OCI whiteout entry to overlay format.
func (u *unpacker) whiteout(name, p, base string) error {
	dir := path.Dir(p)
	if base == whiteoutOpaque {
		if err := unix.Setxattr(filepath.Join(u.dir, dir), u.opaqueX, []byte("y"), 0); err != nil {
			return fmt.Errorf("unpack %s: mark opaque: %w", dir, err)
		}
		return nil
	}
	target := base[len(whiteoutPrefix):]
	if target == "" || target == "." || target == ".." {
		return bad(name, "whiteout without a name")
	}
	t := path.Join(dir, target)
	if u.seen[t] != 0 {
		return bad(name, "whiteout of %q, which this layer also contains", t)
	}
	if err := unix.Mknod(filepath.Join(u.dir, t), unix.S_IFCHR, 0); err != nil {
		return fmt.Errorf("unpack %s: whiteout: %w", t, err)
	}
	u.seen[t] = kindWhiteout
	return nil
}

func (u *unpacker) file(tr *tar.Reader, hdr *tar.Header, full string) error {
	if hdr.Size < 0 || hdr.Size > u.max-u.size {
		return fmt.Errorf("%w: entry %q: uncompressed layer exceeds the limit of %d bytes", ErrInvalidArchive, hdr.Name, u.max)
	}
	f, err := os.OpenFile(full, os.O_WRONLY|os.O_CREATE|os.O_EXCL|unix.O_NOFOLLOW, 0o600)
	if err != nil {
		return fmt.Errorf("unpack %s: %w", hdr.Name, err)
	}
	n, err := io.CopyBuffer(f, struct{ io.Reader }{tr}, u.buf)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		if errors.Is(err, ErrInvalidArchive) {
			return err
		}
		if errors.Is(err, io.ErrUnexpectedEOF) {
			return bad(hdr.Name, "truncated tar")
		}
		return fmt.Errorf("%w: entry %q: %v", ErrInvalidArchive, hdr.Name, err)
	}
	if n != hdr.Size {
		return bad(hdr.Name, "short file data")
	}
	u.size += n
	return nil
}

// meta applies owner, mode, xattrs and times to a non-directory.
func (u *unpacker) meta(hdr *tar.Header, full string) error {
	if u.root {
		if err := os.Lchown(full, hdr.Uid, hdr.Gid); err != nil {
			return fmt.Errorf("unpack %s: chown: %w", hdr.Name, err)
		}
	}
	if hdr.Typeflag != tar.TypeSymlink {
		// After chown, which clears setuid; setuid/setgid/sticky are kept
		// as docker keeps them.
		if err := unix.Chmod(full, uint32(hdr.Mode&0o7777)); err != nil {
			return fmt.Errorf("unpack %s: chmod: %w", hdr.Name, err)
		}
	}
	if err := u.xattrs(hdr, full); err != nil {
		return err
	}
	return setTimes(full, hdr)
}

func setTimes(full string, hdr *tar.Header) error {
	at := hdr.AccessTime
	if at.IsZero() {
		at = hdr.ModTime
	}
	ts := []unix.Timespec{unix.NsecToTimespec(at.UnixNano()), unix.NsecToTimespec(hdr.ModTime.UnixNano())}
	if err := unix.UtimesNanoAt(unix.AT_FDCWD, full, ts, unix.AT_SYMLINK_NOFOLLOW); err != nil {
		return fmt.Errorf("unpack %s: times: %w", hdr.Name, err)
	}
	return nil
}

// xattrs applies the entry's extended attributes, except overlay's own:
// a layer that could set trusted.overlay.* would forge whiteouts, opaque
// dirs or redirects in the union, so those are dropped.
func (u *unpacker) xattrs(hdr *tar.Header, full string) error {
	for k, v := range hdr.PAXRecords {
		name, ok := strings.CutPrefix(k, "SCHILY.xattr.")
		if !ok {
			continue
		}
		if strings.HasPrefix(name, "trusted.overlay.") || strings.HasPrefix(name, "user.overlay.") {
			continue
		}
		if err := unix.Lsetxattr(full, name, []byte(v), 0); err != nil {
			if errors.Is(err, unix.ENOTSUP) || errors.Is(err, unix.EPERM) || errors.Is(err, unix.EOPNOTSUPP) {
				continue // the filesystem or our privileges do not allow it
			}
			return fmt.Errorf("unpack %s: xattr %s: %w", hdr.Name, name, err)
		}
	}
	return nil
}

// finishDirs applies directory metadata deepest first, after all children
// exist (creating a child changes its parent's mtime).
func (u *unpacker) finishDirs() error {
	paths := make([]string, 0, len(u.dirs))
	for p := range u.dirs {
		paths = append(paths, p)
	}
	sort.Slice(paths, func(i, j int) bool { return len(paths[i]) > len(paths[j]) })
	for _, p := range paths {
		hdr := u.dirs[p]
		full := filepath.Join(u.dir, p)
		if u.root {
			if err := os.Lchown(full, hdr.Uid, hdr.Gid); err != nil {
				return fmt.Errorf("unpack %s: chown: %w", p, err)
			}
		}
		if err := unix.Chmod(full, uint32(hdr.Mode&0o7777)); err != nil {
			return fmt.Errorf("unpack %s: chmod: %w", p, err)
		}
		if err := setTimes(full, hdr); err != nil {
			return err
		}
	}
	return nil
}
