package driver

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"sync"

	"golang.org/x/sys/unix"
)

// Native is no union at all: a plain directory holding the merged tree of
// the layers, bind-mounted on the target. It is the floor lamina bench
// measures the unions against.
//
// The merged tree (whiteouts and opaque directories applied, as overlay
// shows it) is copied once per set of lower layers into FlatDir and reused;
// Lower layers are immutable, so the copy stays valid until the caller
// removes FlatDir. A writable mount gets a hardlink farm of that copy in
// Upper (which must be empty), so renames, creates and deletes do not touch
// the cached copy; writes into an existing file do reach it through the
// shared inode, as they would in any flat directory. Without FlatDir every
// mount makes a fresh full copy.
type Native struct {
	FlatDir string
}

func (Native) Name() string { return "native" }

func (Native) Available() error {
	if os.Geteuid() != 0 {
		return unavailable("native", "needs root (bind mount)")
	}
	return nil
}

func (n Native) Mount(l Layers, target string) (Mount, error) {
	if err := l.Validate(); err != nil {
		return nil, fmt.Errorf("native mount %s: %w", target, err)
	}
	if l.Upper != "" {
		ents, err := os.ReadDir(l.Upper)
		if err != nil {
			return nil, fmt.Errorf("native mount %s: %w", target, err)
		}
		if len(ents) > 0 {
			return nil, fmt.Errorf("native mount %s: upper dir %s is not empty", target, l.Upper)
		}
	}
	m := &nativeMount{target: target}
	src, err := n.flat(l, m)
	if err != nil {
		m.cleanup()
		return nil, fmt.Errorf("native mount %s: %w", target, err)
	}
	if err := unix.Mount(src, target, "", unix.MS_BIND, ""); err != nil {
		m.cleanup()
		return nil, fmt.Errorf("native: bind mount %s on %s: %w", src, target, err)
	}
	if l.ReadOnly() {
		if err := unix.Mount("", target, "", unix.MS_BIND|unix.MS_REMOUNT|unix.MS_RDONLY, ""); err != nil {
			_ = unix.Unmount(target, unix.MNT_DETACH)
			m.cleanup()
			return nil, fmt.Errorf("native: remount %s read-only: %w", target, err)
		}
	}
	return m, nil
}

// flat returns the directory to bind: the cached merged copy for a
// read-only union, or Upper filled from it for a writable one.
func (n Native) flat(l Layers, m *nativeMount) (string, error) {
	if n.FlatDir == "" {
		if l.Upper != "" {
			return l.Upper, MergeLayers(l.Lower, l.Upper, false)
		}
		tmp, err := os.MkdirTemp("", "lamina-native-")
		if err != nil {
			return "", err
		}
		m.temp = tmp
		return tmp, MergeLayers(l.Lower, tmp, false)
	}
	cached, err := n.cached(l.Lower)
	if err != nil {
		return "", err
	}
	if l.Upper == "" {
		return cached, nil
	}
	return l.Upper, cloneTree(cached, l.Upper)
}

// cached returns the merged copy of lower in FlatDir, making it first if
// needed. A copy counts only once its stamp file exists.
func (n Native) cached(lower []string) (string, error) {
	sum := sha256.Sum256([]byte(strings.Join(lower, "\x00")))
	key := hex.EncodeToString(sum[:8])
	dir := filepath.Join(n.FlatDir, key)
	stamp := dir + ".done"
	if _, err := os.Stat(stamp); err == nil {
		return dir, nil
	}
	if err := os.RemoveAll(dir); err != nil {
		return "", err
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", err
	}
	if err := MergeLayers(lower, dir, false); err != nil {
		return "", err
	}
	return dir, os.WriteFile(stamp, []byte(strings.Join(lower, "\n")+"\n"), 0o644)
}

type nativeMount struct {
	target string
	temp   string // merged copy made for this mount alone
	once   sync.Once
	err    error
}

func (m *nativeMount) Target() string { return m.target }

func (m *nativeMount) Unmount() error {
	m.once.Do(func() {
		if err := unix.Unmount(m.target, 0); err != nil && err != unix.EINVAL {
			if err2 := unix.Unmount(m.target, unix.MNT_DETACH); err2 != nil {
				m.err = fmt.Errorf("unmount %s: %w", m.target, err)
			}
		}
		m.cleanup()
	})
	return m.err
}

func (m *nativeMount) cleanup() {
	if m.temp != "" {
		_ = os.RemoveAll(m.temp)
	}
}

// MergeLayers writes the tree that overlay shows for the lower layers
// (lower[0] on top) into dst, an existing directory: a name is taken from
// the topmost layer that has it, a whiteout (character device 0/0) hides
// it, and an opaque directory (trusted.overlay.opaque=y) hides the layers
// below it. Regular files are copied, or hardlinked when link is true.
func MergeLayers(lower []string, dst string, link bool) error {
	return mergeDir(lower, dst, link)
}

func mergeDir(srcs []string, dst string, link bool) error {
	seen := map[string]bool{}
	for i, src := range srcs {
		ents, err := os.ReadDir(src)
		if err != nil {
			return err
		}
		for _, e := range ents {
			name := e.Name()
			if seen[name] {
				continue
			}
			seen[name] = true
			p := filepath.Join(src, name)
			var st unix.Stat_t
			if err := unix.Lstat(p, &st); err != nil {
				return fmt.Errorf("lstat %s: %w", p, err)
			}
			if isWhiteout(&st) {
				continue
			}
			if st.Mode&unix.S_IFMT != unix.S_IFDIR {
				if err := copyEntry(p, filepath.Join(dst, name), &st, link); err != nil {
					return err
				}
				continue
			}
			sub := []string{p}
			if !isOpaque(p) {
				for _, lower := range srcs[i+1:] {
					q := filepath.Join(lower, name)
					var qs unix.Stat_t
					if unix.Lstat(q, &qs) != nil {
						continue // absent here: look further down
					}
					if qs.Mode&unix.S_IFMT != unix.S_IFDIR {
						break // a whiteout or a non-directory ends the stack
					}
					sub = append(sub, q)
					if isOpaque(q) {
						break
					}
				}
			}
			d := filepath.Join(dst, name)
			if err := os.Mkdir(d, 0o700); err != nil {
				return err
			}
			if err := mergeDir(sub, d, link); err != nil {
				return err
			}
			if err := copyMeta(d, &st); err != nil {
				return err
			}
		}
	}
	return nil
}

func isWhiteout(st *unix.Stat_t) bool {
	return st.Mode&unix.S_IFMT == unix.S_IFCHR && st.Rdev == 0
}

func isOpaque(dir string) bool {
	buf := make([]byte, 8)
	for _, name := range []string{"trusted.overlay.opaque", "user.overlay.opaque"} {
		n, err := unix.Lgetxattr(dir, name, buf)
		if err == nil && n == 1 && buf[0] == 'y' {
			return true
		}
	}
	return false
}

// copyEntry copies the non-directory src to dst: data by copy_file_range
// (or a hardlink), symlinks, devices, fifos; then mode, owner and times.
func copyEntry(src, dst string, st *unix.Stat_t, link bool) error {
	switch st.Mode & unix.S_IFMT {
	case unix.S_IFREG:
		if link {
			if err := os.Link(src, dst); err == nil {
				return nil
			} else if !errors.Is(err, unix.EXDEV) {
				return err
			}
		}
		if err := copyFile(src, dst); err != nil {
			return err
		}
	case unix.S_IFLNK:
		t, err := os.Readlink(src)
		if err != nil {
			return err
		}
		if err := os.Symlink(t, dst); err != nil {
			return err
		}
		_ = unix.Lchown(dst, int(st.Uid), int(st.Gid))
		return nil
	default:
		if err := unix.Mknod(dst, st.Mode, int(st.Rdev)); err != nil {
			return fmt.Errorf("mknod %s: %w", dst, err)
		}
	}
	return copyMeta(dst, st)
}

func copyFile(src, dst string) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return fmt.Errorf("copy %s: %w", src, err)
	}
	return out.Close()
}

func copyMeta(p string, st *unix.Stat_t) error {
	if err := unix.Lchown(p, int(st.Uid), int(st.Gid)); err != nil {
		return fmt.Errorf("chown %s: %w", p, err)
	}
	if err := unix.Chmod(p, st.Mode&0o7777); err != nil {
		return fmt.Errorf("chmod %s: %w", p, err)
	}
	ts := []unix.Timespec{st.Atim, st.Mtim}
	if err := unix.UtimesNanoAt(unix.AT_FDCWD, p, ts, unix.AT_SYMLINK_NOFOLLOW); err != nil {
		return fmt.Errorf("utimes %s: %w", p, err)
	}
	return nil
}

// cloneTree fills the empty directory dst with a hardlink farm of src:
// directories are made anew, everything else is linked (or copied where a
// link is impossible).
func cloneTree(src, dst string) error {
	return filepath.WalkDir(src, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(src, p)
		if rel == "." {
			return nil
		}
		var st unix.Stat_t
		if err := unix.Lstat(p, &st); err != nil {
			return err
		}
		out := filepath.Join(dst, rel)
		if d.IsDir() {
			if err := os.Mkdir(out, 0o700); err != nil {
				return err
			}
			return copyMeta(out, &st)
		}
		if st.Mode&unix.S_IFMT == unix.S_IFREG || st.Mode&unix.S_IFMT == unix.S_IFLNK {
			if err := os.Link(p, out); err == nil {
				return nil
			} else if !errors.Is(err, unix.EXDEV) {
				return err
			}
		}
		return copyEntry(p, out, &st, false)
	})
}
