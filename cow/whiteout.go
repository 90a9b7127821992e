// Package cow manages the upper (read-write) layer of a union on disk,
// independent of FUSE: copy-up of files, symlinks, special files and
// directories from a lower layer; whiteouts and opaque markers in the
// kernel overlay format; and private xattrs that must stay hidden.
//
// Every change that makes something appear in the upper layer is built in
// the work directory (same filesystem as the upper) and moved into place by
// a single rename or link, so a crash at any moment never leaves a
// half-written object visible in the union.
package cow

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"golang.org/x/sys/unix"
)

// XattrNS is the xattr namespace of overlay's private attributes:
// "trusted.overlay." when running as root (what kernel overlay reads by
// default), "user.overlay." otherwise (overlay's userxattr option).
type XattrNS string

const (
	TrustedNS XattrNS = "trusted.overlay."
	UserNS    XattrNS = "user.overlay."
)

// DefaultNS is the namespace a process with our privileges can write.
func DefaultNS() XattrNS {
	if os.Geteuid() == 0 {
		return TrustedNS
	}
	return UserNS
}

// Opaque is the name of the opaque-directory xattr in ns.
func (ns XattrNS) Opaque() string { return string(ns) + "opaque" }

// RedirectName is the name of the directory-redirect xattr in ns.
func (ns XattrNS) RedirectName() string { return string(ns) + "redirect" }

// OCI whiteout names, as found in image layer tars and in layers unpacked
// by tools that keep them as files.
const (
	OCIWhiteoutPrefix = ".wh."
	OCIOpaqueMarker   = ".wh..wh..opq"
)

// IsPrivateXattr reports whether name is one of overlay's own attributes
// (in either namespace), which describe a layer and are not copied up.
// Escaped names ("trusted.overlay.overlay.*", what an overlay stores when
// its user sets "trusted.overlay.*", for nested overlays) are user data.
func IsPrivateXattr(name string) bool {
	for _, ns := range []XattrNS{TrustedNS, UserNS} {
		if strings.HasPrefix(name, string(ns)) {
			return !strings.HasPrefix(name, ns.escapePrefix())
		}
	}
	return false
}

func (ns XattrNS) escapePrefix() string { return string(ns) + "overlay." }

// Escape maps an xattr name as a union's user sees it to the name stored
// on the layer: names in ns are escaped, as kernel overlay does since
// Linux 6.7, so that an overlay can be nested in another.
func (ns XattrNS) Escape(name string) string {
	if strings.HasPrefix(name, string(ns)) {
		return string(ns) + "overlay." + name[len(ns):]
	}
	return name
}

// Unescape maps a stored xattr name to what the union's user sees, and
// reports false for the union's own (private) attributes, which are hidden.
func (ns XattrNS) Unescape(name string) (string, bool) {
	if !strings.HasPrefix(name, string(ns)) {
		return name, true
	}
	if strings.HasPrefix(name, ns.escapePrefix()) {
		return string(ns) + name[len(ns.escapePrefix()):], true
	}
	return "", false
}

// IsWhiteoutStat reports whether st describes a kernel-format whiteout: a
// character device with device number 0/0.
func IsWhiteoutStat(st *unix.Stat_t) bool {
	return st.Mode&unix.S_IFMT == unix.S_IFCHR && st.Rdev == 0
}

// IsOpaque reports whether the directory at path carries an opaque marker
// in namespace ns. Like kernel overlay, only the union's own namespace
// counts: as root a user.overlay.* attribute is ordinary data a container
// may set, and must not steer the union. (OCI ".wh..wh..opq" files are
// found by the union's directory index.)
func (ns XattrNS) IsOpaque(path string) bool {
	var buf [4]byte
	n, err := unix.Lgetxattr(path, ns.Opaque(), buf[:])
	return err == nil && n >= 1 && buf[0] == 'y'
}

// Redirect returns the redirect of the directory at path in namespace ns,
// or "" when it has none or it is not a clean absolute path or single name
// (kernel overlay refuses those too).
func (ns XattrNS) Redirect(path string) string {
	var buf [512]byte
	n, err := unix.Lgetxattr(path, ns.RedirectName(), buf[:])
	if err != nil || n <= 0 {
		return ""
	}
	r := string(buf[:n])
	if strings.HasPrefix(r, "/") {
		if filepath.Clean(r) != r || r == "/" {
			return ""
		}
		for _, c := range strings.Split(r[1:], "/") {
			if c == ".." || c == "." {
				return ""
			}
		}
		return r
	}
	if strings.Contains(r, "/") || r == "." || r == ".." {
		return ""
	}
	return r
}

// MakeWhiteout atomically replaces (or creates) dir/name with a whiteout.
// The whiteout is made in work and renamed into place; if dir/name is a
// directory it is exchanged and the old directory is removed from work.
func MakeWhiteout(work string, dirfd int, name string) error {
	tmp, err := tempName(work)
	if err != nil {
		return err
	}
	if err := unix.Mknod(tmp, unix.S_IFCHR, 0); err != nil {
		return fmt.Errorf("whiteout %s: mknod: %w", name, err)
	}
	var st unix.Stat_t
	if err := unix.Fstatat(dirfd, name, &st, unix.AT_SYMLINK_NOFOLLOW); err == nil && st.Mode&unix.S_IFMT == unix.S_IFDIR {
		if err := unix.Renameat2(unix.AT_FDCWD, tmp, dirfd, name, unix.RENAME_EXCHANGE); err != nil {
			_ = unix.Unlink(tmp)
			return fmt.Errorf("whiteout %s: exchange: %w", name, err)
		}
		return os.RemoveAll(tmp)
	}
	if err := unix.Renameat(unix.AT_FDCWD, tmp, dirfd, name); err != nil {
		_ = unix.Unlink(tmp)
		return fmt.Errorf("whiteout %s: %w", name, err)
	}
	return nil
}

// SetOpaque marks the directory at path opaque.
func SetOpaque(ns XattrNS, path string) error {
	if err := unix.Lsetxattr(path, ns.Opaque(), []byte("y"), 0); err != nil {
		return fmt.Errorf("mark %s opaque: %w", path, err)
	}
	return nil
}

// RemoveWhiteouts deletes the whiteouts (and only whiteouts) directly in
// the directory dir; it fails with ENOTEMPTY if anything else is there.
// It is used before removing or replacing a directory that the union shows
// as empty.
func RemoveWhiteouts(dir string) error {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return err
	}
	for _, e := range ents {
		p := dir + "/" + e.Name()
		var st unix.Stat_t
		if err := unix.Lstat(p, &st); err != nil {
			return err
		}
		if !IsWhiteoutStat(&st) {
			return unix.ENOTEMPTY
		}
		if err := unix.Unlink(p); err != nil {
			return err
		}
	}
	return nil
}

// tempName returns a fresh name in work that does not exist yet.
func tempName(work string) (string, error) {
	f, err := os.CreateTemp(work, "cow-")
	if err != nil {
		return "", fmt.Errorf("temp in workdir: %w", err)
	}
	name := f.Name()
	f.Close()
	if err := os.Remove(name); err != nil && !errors.Is(err, os.ErrNotExist) {
		return "", err
	}
	return name, nil
}
