package fsops

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"golang.org/x/sys/unix"
)

// Type is the file type of an entry.
type Type string

const (
	TypeFile     Type = "file"
	TypeDir      Type = "dir"
	TypeSymlink  Type = "symlink"
	TypeFifo     Type = "fifo"
	TypeChar     Type = "chardev"
	TypeBlock    Type = "blockdev"
	TypeSocket   Type = "socket"
	TypeWhiteout Type = "whiteout" // only in SnapshotUpper: a character device 0/0
)

// Entry is what a snapshot records of one name.
type Entry struct {
	Type   Type
	Mode   uint32 // permission, setuid, setgid and sticky bits
	UID    uint32
	GID    uint32
	Size   int64  // regular files and symlinks
	Hash   string // regular files: see hashFile
	Nlink  uint64 // non-directories
	Target string // symlinks
	Rdev   uint64 // devices
	Xattrs map[string]string
	// Not compared by Diff unless asked (see Compare).
	Mtime  int64  // nanoseconds
	Blocks int64  // 512-byte blocks allocated, to check sparse files
	Ino    uint64 // st_ino
	// Only in SnapshotUpper.
	Opaque   bool   // trusted.overlay.opaque=y
	Redirect string // trusted.overlay.redirect
}

// Tree is a snapshot: every name under a root (relative paths, the root
// itself as "."), with what was recorded of it.
type Tree map[string]Entry

// Paths returns the tree's paths in order.
func (t Tree) Paths() []string {
	ps := make([]string, 0, len(t))
	for p := range t {
		ps = append(ps, p)
	}
	sort.Strings(ps)
	return ps
}

// Snapshot records the tree at root as a process sees it through a mount:
// every name, with trusted.overlay.* xattrs left out (overlay hides its
// own; that a union does is checked by the conformance suite, not by
// comparing snapshots).
func Snapshot(root string) (Tree, error) {
	return snapshot(root, false)
}

// SnapshotUpper records an upper directory in overlay's on-disk form:
// character devices 0/0 are TypeWhiteout, trusted.overlay.opaque=y sets
// Opaque and trusted.overlay.redirect sets Redirect. Other trusted.overlay.*
// xattrs (origin, impure, nlink, upper, ...) hold file handles or caches
// that legitimately differ between two writers and are left out.
func SnapshotUpper(upper string) (Tree, error) {
	return snapshot(upper, true)
}

// SnapshotMeta is Snapshot without file contents and xattrs: a readdir
// and an lstat per name, cheap enough to take after every operation.
func SnapshotMeta(root string) (Tree, error) {
	t := Tree{}
	err := filepath.WalkDir(root, func(p string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(root, p)
		if err != nil {
			return err
		}
		var st unix.Stat_t
		if err := unix.Lstat(p, &st); err != nil {
			return fmt.Errorf("snapshot %s: %w", p, err)
		}
		e := Entry{Type: typeOf(st.Mode), Mode: st.Mode & 0o7777, UID: st.Uid, GID: st.Gid,
			Mtime: st.Mtim.Nano(), Blocks: st.Blocks, Ino: st.Ino}
		if e.Type != TypeDir {
			e.Nlink, e.Size = uint64(st.Nlink), st.Size
		}
		if e.Type == TypeChar || e.Type == TypeBlock {
			e.Rdev = st.Rdev
		}
		t[rel] = e
		return nil
	})
	if err != nil {
		return nil, err
	}
	return t, nil
}

func typeOf(mode uint32) Type {
	switch mode & unix.S_IFMT {
	case unix.S_IFREG:
		return TypeFile
	case unix.S_IFDIR:
		return TypeDir
	case unix.S_IFLNK:
		return TypeSymlink
	case unix.S_IFIFO:
		return TypeFifo
	case unix.S_IFCHR:
		return TypeChar
	case unix.S_IFBLK:
		return TypeBlock
	}
	return TypeSocket
}

func snapshot(root string, upper bool) (Tree, error) {
	t := Tree{}
	err := filepath.WalkDir(root, func(p string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(root, p)
		if err != nil {
			return err
		}
		e, err := entryOf(p, upper)
		if err != nil {
			return fmt.Errorf("snapshot %s: %w", p, err)
		}
		t[rel] = e
		return nil
	})
	if err != nil {
		return nil, err
	}
	return t, nil
}

func entryOf(p string, upper bool) (Entry, error) {
	var st unix.Stat_t
	if err := unix.Lstat(p, &st); err != nil {
		return Entry{}, err
	}
	e := Entry{
		Mode:   st.Mode & 0o7777,
		UID:    st.Uid,
		GID:    st.Gid,
		Mtime:  st.Mtim.Nano(),
		Blocks: st.Blocks,
		Ino:    st.Ino,
	}
	switch st.Mode & unix.S_IFMT {
	case unix.S_IFREG:
		e.Type = TypeFile
		h, err := hashFile(p, st.Size)
		if err != nil {
			return e, err
		}
		e.Hash = h
	case unix.S_IFDIR:
		e.Type = TypeDir
	case unix.S_IFLNK:
		e.Type = TypeSymlink
		tgt, err := os.Readlink(p)
		if err != nil {
			return e, err
		}
		e.Target = tgt
	case unix.S_IFIFO:
		e.Type = TypeFifo
	case unix.S_IFCHR:
		e.Type = TypeChar
		e.Rdev = st.Rdev
		if upper && st.Rdev == 0 {
			// Overlay links all its whiteouts to one shared inode, so
			// their link count, times and inode number say nothing.
			e.Type = TypeWhiteout
			e.Mtime, e.Blocks, e.Ino = 0, 0, 0
		}
	case unix.S_IFBLK:
		e.Type = TypeBlock
		e.Rdev = st.Rdev
	case unix.S_IFSOCK:
		e.Type = TypeSocket
	}
	if e.Type != TypeDir && e.Type != TypeWhiteout {
		e.Nlink = uint64(st.Nlink)
		e.Size = st.Size
	}
	xs, err := xattrs(p)
	if err != nil {
		return e, err
	}
	for k, v := range xs {
		if !strings.HasPrefix(k, "trusted.overlay.") {
			continue
		}
		if upper && strings.HasPrefix(k, "trusted.overlay.overlay.") {
			continue // a user's trusted.overlay.* xattr, escaped (overlay >= 6.7)
		}
		delete(xs, k)
		if !upper {
			continue
		}
		switch k {
		case "trusted.overlay.opaque":
			e.Opaque = v == "y"
		case "trusted.overlay.redirect":
			e.Redirect = v
		}
	}
	// security.* (SELinux labels, capabilities) and system.* (ACLs) are
	// outside what the tests set, and differ by host.
	for k := range xs {
		if !strings.HasPrefix(k, "user.") && !strings.HasPrefix(k, "trusted.") {
			delete(xs, k)
		}
	}
	if len(xs) > 0 {
		e.Xattrs = xs
	}
	return e, nil
}

// xattrs reads every extended attribute of p (not following a symlink).
func xattrs(p string) (map[string]string, error) {
	buf := make([]byte, 4096)
	for {
		n, err := unix.Llistxattr(p, buf)
		if errors.Is(err, unix.ERANGE) {
			buf = make([]byte, len(buf)*4)
			continue
		}
		if errors.Is(err, unix.ENOTSUP) {
			return nil, nil
		}
		if err != nil {
			return nil, fmt.Errorf("listxattr: %w", err)
		}
		buf = buf[:n]
		break
	}
	m := map[string]string{}
	for _, name := range strings.Split(string(buf), "\x00") {
		if name == "" {
			continue
		}
		v, err := getxattr(p, name)
		if errors.Is(err, unix.ENODATA) {
			continue // listed but hidden, as overlay does for trusted.overlay.*
		}
		if err != nil {
			return nil, fmt.Errorf("getxattr %s: %w", name, err)
		}
		m[name] = v
	}
	return m, nil
}

func getxattr(p, name string) (string, error) {
	buf := make([]byte, 256)
	for {
		n, err := unix.Lgetxattr(p, name, buf)
		if errors.Is(err, unix.ERANGE) {
			buf = make([]byte, len(buf)*16)
			continue
		}
		if err != nil {
			return "", err
		}
		return string(buf[:n]), nil
	}
}

// hashChunk is the unit of content hashing.
const hashChunk = 64 << 10

// hashFile hashes a regular file's content in a way that does not depend
// on how it is stored: every 64 KiB chunk that is not all zeros is hashed
// with its offset, and the size is hashed last. Holes found by SEEK_DATA
// are skipped without reading them; they hash like written zeros, so a
// sparse file and its dense copy hash the same (holes are checked through
// Entry.Blocks instead), and a filesystem without SEEK_DATA costs only time.
func hashFile(p string, size int64) (string, error) {
	f, err := os.Open(p)
	if err != nil {
		return "", err
	}
	defer f.Close()
	h := sha256.New()
	buf := make([]byte, hashChunk)
	zero := make([]byte, hashChunk)
	var off int64
	for off < size {
		if off%hashChunk == 0 {
			// Skip a hole, chunk-aligned so chunk boundaries are the
			// same whatever the hole layout.
			if d, err := unix.Seek(int(f.Fd()), off, unix.SEEK_DATA); err == nil && d > off {
				off = d - d%hashChunk
			} else if errors.Is(err, unix.ENXIO) {
				break // only a hole up to the end
			}
		}
		n, err := f.ReadAt(buf[:min(int64(hashChunk), size-off)], off)
		if n == 0 && err != nil {
			if errors.Is(err, io.EOF) {
				break // shrank while we read
			}
			return "", err
		}
		if !bytes.Equal(buf[:n], zero[:n]) {
			fmt.Fprintf(h, "@%d:", off)
			h.Write(buf[:n])
		}
		off += int64(n)
	}
	fmt.Fprintf(h, "size=%d", size)
	return hex.EncodeToString(h.Sum(nil))[:16], nil
}

// Compare says which fields Diff compares beyond the always-compared ones
// (type, mode, owner, size, content, nlink of non-dirs, symlink target,
// rdev, xattrs, opaque, redirect).
type Compare struct {
	// Mtime compares the mtime of non-directories. Directory times change
	// with every entry added or removed, at moments that differ between
	// two mounts, so they are never compared.
	Mtime bool
	// IgnoreMtime lists paths whose mtime is not compared even with Mtime
	// (files an operation wrote, which get the time of the write).
	IgnoreMtime []string
	// NoNlink skips link counts.
	NoNlink bool
	// NoRedirect skips Redirect (two writers may record a renamed
	// directory differently).
	NoRedirect bool
	// Skip lists paths (and everything under them) left out entirely.
	Skip []string
}

// IgnoreOpaqueWhereNothingBelow clears Opaque on the upper directories of
// upper whose path is a directory in none of lowers (raw snapshots of the
// lower dirs): there the marker hides nothing, and overlay sets it or not
// depending on its options (with redirect_dir or index on, new directories
// in merged parents are marked opaque as an optimisation).
func IgnoreOpaqueWhereNothingBelow(upper Tree, lowers ...Tree) {
	for p, e := range upper {
		if !e.Opaque {
			continue
		}
		below := false
		for _, l := range lowers {
			if le, ok := l[p]; ok && le.Type == TypeDir {
				below = true
			}
		}
		if !below {
			e.Opaque = false
			upper[p] = e
		}
	}
}

// Diff compares two trees on the always-compared fields and returns one
// readable line per difference, "a" being the first tree and "b" the
// second; nil when they agree.
func Diff(a, b Tree) []string { return Compare{}.Diff(a, b) }

// Diff compares a and b as c says.
func (c Compare) Diff(a, b Tree) []string {
	var out []string
	skip := func(p string) bool {
		for _, s := range c.Skip {
			if p == s || strings.HasPrefix(p, s+"/") {
				return true
			}
		}
		return false
	}
	for _, p := range union(a, b) {
		if skip(p) {
			continue
		}
		ea, ina := a[p]
		eb, inb := b[p]
		switch {
		case !inb:
			out = append(out, fmt.Sprintf("%s: only in a (%s)", p, ea.summary()))
			continue
		case !ina:
			out = append(out, fmt.Sprintf("%s: only in b (%s)", p, eb.summary()))
			continue
		}
		d := func(field string, va, vb any) {
			out = append(out, fmt.Sprintf("%s: %s %v != %v", p, field, va, vb))
		}
		if ea.Type != eb.Type {
			d("type", ea.Type, eb.Type)
			continue
		}
		if ea.Mode != eb.Mode {
			d("mode", fmt.Sprintf("%#o", ea.Mode), fmt.Sprintf("%#o", eb.Mode))
		}
		if ea.UID != eb.UID || ea.GID != eb.GID {
			d("owner", fmt.Sprintf("%d:%d", ea.UID, ea.GID), fmt.Sprintf("%d:%d", eb.UID, eb.GID))
		}
		if ea.Size != eb.Size {
			d("size", ea.Size, eb.Size)
		}
		if ea.Hash != eb.Hash {
			d("content", ea.Hash, eb.Hash)
		}
		if !c.NoNlink && ea.Nlink != eb.Nlink {
			d("nlink", ea.Nlink, eb.Nlink)
		}
		if ea.Target != eb.Target {
			d("target", fmt.Sprintf("%q", ea.Target), fmt.Sprintf("%q", eb.Target))
		}
		if ea.Rdev != eb.Rdev {
			d("rdev", ea.Rdev, eb.Rdev)
		}
		if xa, xb := fmtXattrs(ea.Xattrs), fmtXattrs(eb.Xattrs); xa != xb {
			d("xattrs", xa, xb)
		}
		if ea.Opaque != eb.Opaque {
			d("opaque", ea.Opaque, eb.Opaque)
		}
		if !c.NoRedirect && ea.Redirect != eb.Redirect {
			d("redirect", fmt.Sprintf("%q", ea.Redirect), fmt.Sprintf("%q", eb.Redirect))
		}
		if c.Mtime && ea.Type != TypeDir && ea.Mtime != eb.Mtime && !contains(c.IgnoreMtime, p) {
			d("mtime", ea.Mtime, eb.Mtime)
		}
	}
	return out
}

func contains(ss []string, s string) bool {
	for _, x := range ss {
		if x == s {
			return true
		}
	}
	return false
}

func union(a, b Tree) []string {
	seen := map[string]bool{}
	for p := range a {
		seen[p] = true
	}
	for p := range b {
		seen[p] = true
	}
	ps := make([]string, 0, len(seen))
	for p := range seen {
		ps = append(ps, p)
	}
	sort.Strings(ps)
	return ps
}

func fmtXattrs(m map[string]string) string {
	if len(m) == 0 {
		return "{}"
	}
	ks := make([]string, 0, len(m))
	for k := range m {
		ks = append(ks, k)
	}
	sort.Strings(ks)
	var b strings.Builder
	b.WriteString("{")
	for i, k := range ks {
		if i > 0 {
			b.WriteString(" ")
		}
		fmt.Fprintf(&b, "%s=%q", k, m[k])
	}
	b.WriteString("}")
	return b.String()
}

func (e Entry) summary() string {
	s := string(e.Type)
	switch e.Type {
	case TypeFile:
		s += fmt.Sprintf(" %#o size=%d", e.Mode, e.Size)
	case TypeSymlink:
		s += " -> " + e.Target
	case TypeDir:
		s += fmt.Sprintf(" %#o", e.Mode)
		if e.Opaque {
			s += " opaque"
		}
	}
	return s
}

// String renders t one entry a line, for failure messages.
func (t Tree) String() string {
	var b strings.Builder
	for _, p := range t.Paths() {
		e := t[p]
		fmt.Fprintf(&b, "  %s: %s uid=%d gid=%d", p, e.summary(), e.UID, e.GID)
		if e.Type != TypeDir {
			fmt.Fprintf(&b, " nlink=%d", e.Nlink)
		}
		if e.Hash != "" {
			fmt.Fprintf(&b, " hash=%s", e.Hash)
		}
		if len(e.Xattrs) > 0 {
			fmt.Fprintf(&b, " xattrs=%s", fmtXattrs(e.Xattrs))
		}
		if e.Redirect != "" {
			fmt.Fprintf(&b, " redirect=%q", e.Redirect)
		}
		b.WriteString("\n")
	}
	return b.String()
}
