package driver_test

import (
	"bytes"
	"encoding/binary"
	"os"
	"os/exec"
	"path/filepath"
	"strings"

	"golang.org/x/sys/unix"
)

// Checks that a tree comparison cannot express, run by cases with the
// union mounted.

// checkMmapWrite writes a lower file through a shared mapping: the open
// for writing copies it up, and the bytes stored through the mapping must
// reach the upper file.
func checkMmapWrite(e *env) {
	fd, err := unix.Open(e.path("d/f"), unix.O_RDWR|unix.O_CLOEXEC, 0)
	if err != nil {
		e.Errorf("open d/f O_RDWR: %v", err)
		return
	}
	defer unix.Close(fd)
	m, err := unix.Mmap(fd, 0, 4, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
	if err != nil {
		e.Errorf("mmap: %v", err)
		return
	}
	if string(m) != "data" {
		e.Errorf("mapping shows %q, want %q", m, "data")
	}
	copy(m[1:], "MM")
	if err := unix.Msync(m, unix.MS_SYNC); err != nil {
		e.Errorf("msync: %v", err)
	}
	if err := unix.Munmap(m); err != nil {
		e.Errorf("munmap: %v", err)
	}
	got, err := os.ReadFile(e.path("d/f"))
	if err != nil || string(got) != "dMMa" {
		e.Errorf("after the mapped write d/f reads %q, %v; want %q", got, err, "dMMa")
	}
}

// checkSparseUpper checks that the copied-up file kept its holes: it
// occupies far less than its size in the upper dir.
func checkSparseUpper(name string, size int64) func(*env) {
	return func(e *env) {
		var st unix.Stat_t
		if err := unix.Stat(filepath.Join(e.layers.Upper, name), &st); err != nil {
			e.Errorf("%s not copied up: %v", name, err)
			return
		}
		if st.Size != size {
			e.Errorf("upper %s: size %d, want %d", name, st.Size, size)
		}
		if used := st.Blocks * 512; used > 1<<20 {
			e.Errorf("upper %s: %d bytes allocated for a %d-byte sparse file: holes not kept", name, used, size)
		}
	}
}

// checkSameIno checks that names are one file: one st_ino, and as many
// links as names.
func checkSameIno(names ...string) func(*env) {
	return func(e *env) {
		var first unix.Stat_t
		for i, n := range names {
			var st unix.Stat_t
			if err := unix.Lstat(e.path(n), &st); err != nil {
				e.Errorf("lstat %s: %v", n, err)
				return
			}
			if i == 0 {
				first = st
				continue
			}
			if st.Ino != first.Ino || st.Dev != first.Dev {
				e.Errorf("%s is %d:%d but %s is %d:%d", n, st.Dev, st.Ino, names[0], first.Dev, first.Ino)
			}
			if st.Nlink != uint64(len(names)) {
				e.Errorf("%s: nlink %d, want %d", n, st.Nlink, len(names))
			}
		}
	}
}

// checkMknod makes a character device through the union.
func checkMknod(e *env) {
	if err := unix.Mknod(e.path("c"), unix.S_IFCHR|0o644, int(unix.Mkdev(1, 5))); err != nil {
		e.Errorf("mknod c 1 5: %v", err)
	}
	if err := unix.Mknod(e.path("sock"), unix.S_IFSOCK|0o644, 0); err != nil {
		e.Errorf("mknod socket: %v", err)
	}
}

// checkReadThroughSymlink follows lower symlinks.
func checkReadThroughSymlink(e *env) {
	if b, err := os.ReadFile(e.path("s")); err != nil || string(b) != "f" {
		e.Errorf("read through symlink s: %q, %v", b, err)
	}
	if _, err := os.Stat(e.path("dangling")); !os.IsNotExist(err) {
		e.Errorf("stat through a dangling symlink: %v, want ENOENT", err)
	}
}

// checkOpaqueHidden: overlay's own xattrs cannot be read through the union.
func checkOpaqueHidden(e *env) {
	buf := make([]byte, 64)
	for _, p := range []string{"d", "e"} {
		if _, err := unix.Lgetxattr(e.path(p), "trusted.overlay.opaque", buf); err != unix.ENODATA {
			e.Errorf("getxattr trusted.overlay.opaque on %s: %v, want ENODATA", p, err)
		}
	}
}

// checkXattr reads one xattr back through the union.
func checkXattr(p, name, want string) func(*env) {
	return func(e *env) {
		buf := make([]byte, 256)
		n, err := unix.Lgetxattr(e.path(p), name, buf)
		if err != nil || string(buf[:n]) != want {
			e.Errorf("getxattr %s %s: %q, %v; want %q", p, name, buf[:max(n, 0)], err, want)
		}
	}
}

// checkStatfs: statfs of the union reports the upper layer's filesystem.
func checkStatfs(e *env) {
	var m, u unix.Statfs_t
	if err := unix.Statfs(e.mnt, &m); err != nil {
		e.Errorf("statfs mount: %v", err)
		return
	}
	if err := unix.Statfs(e.layers.Upper, &u); err != nil {
		e.Errorf("statfs upper: %v", err)
		return
	}
	mt, ut := uint64(m.Blocks)*uint64(m.Frsize), uint64(u.Blocks)*uint64(u.Frsize)
	if mt != ut {
		e.Errorf("statfs: total %d bytes, upper fs has %d", mt, ut)
	}
	mf, uf := uint64(m.Bavail)*uint64(m.Frsize), uint64(u.Bavail)*uint64(u.Frsize)
	if diff := int64(mf - uf); diff > 64<<20 || diff < -64<<20 {
		e.Errorf("statfs: %d bytes available, upper fs has %d", mf, uf)
	}
	if m.Files != u.Files {
		e.Errorf("statfs: %d inodes, upper fs has %d", m.Files, u.Files)
	}
	if m.Namelen != u.Namelen {
		e.Errorf("statfs: namelen %d, upper fs has %d", m.Namelen, u.Namelen)
	}
}

// checkInodes: st_ino is the same before and after copy-up, matches
// readdir's d_ino, and survives the kernel forgetting the inodes.
func checkInodes(e *env) {
	names := []string{"d", "d/f", "g"}
	ino := func(n string) uint64 {
		var st unix.Stat_t
		if err := unix.Lstat(e.path(n), &st); err != nil {
			e.Errorf("lstat %s: %v", n, err)
		}
		return st.Ino
	}
	before := map[string]uint64{}
	for _, n := range names {
		before[n] = ino(n)
	}
	checkDino(e, ".")
	checkDino(e, "d")
	if err := unix.Chmod(e.path("d/f"), 0o600); err != nil {
		e.Errorf("chmod d/f: %v", err)
	}
	if err := os.WriteFile(e.path("d/n"), []byte("n"), 0o644); err != nil {
		e.Errorf("create d/n: %v", err)
	}
	if f, err := os.OpenFile(e.path("g"), os.O_WRONLY, 0); err != nil {
		e.Errorf("open g: %v", err)
	} else {
		_, _ = f.WriteAt([]byte("X"), 1)
		f.Close()
	}
	before["d/n"] = ino("d/n")
	for _, n := range names {
		if got := ino(n); got != before[n] {
			e.Errorf("%s: st_ino %d after copy-up, %d before", n, got, before[n])
		}
	}
	checkDino(e, ".")
	checkDino(e, "d")
	// Make the kernel drop cached dentries and inodes (a FUSE server then
	// gets FORGETs and must hand out the same numbers on the next lookup).
	if err := os.WriteFile("/proc/sys/vm/drop_caches", []byte("2"), 0); err != nil {
		e.t.Logf("drop_caches: %v", err)
	}
	for _, n := range append(names, "d/n") {
		if got := ino(n); got != before[n] {
			e.Errorf("%s: st_ino %d after the kernel forgot it, %d before", n, got, before[n])
		}
	}
	// A rename keeps the inode.
	if err := os.Rename(e.path("g"), e.path("g2")); err != nil {
		e.Errorf("rename g g2: %v", err)
	} else if got := ino("g2"); got != before["g"] {
		e.Errorf("g renamed to g2: st_ino %d, %d before", got, before["g"])
	}
}

// checkDino compares each entry's d_ino with its st_ino.
func checkDino(e *env, dir string) {
	fd, err := unix.Open(e.path(dir), unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		e.Errorf("open %s: %v", dir, err)
		return
	}
	defer unix.Close(fd)
	buf := make([]byte, 64<<10)
	for {
		n, err := unix.Getdents(fd, buf)
		if err != nil {
			e.Errorf("getdents %s: %v", dir, err)
			return
		}
		if n == 0 {
			return
		}
		for b := buf[:n]; len(b) > 0; {
			// struct linux_dirent64 { u64 ino; s64 off; u16 reclen; u8 type; char name[]; }
			dino := binary.NativeEndian.Uint64(b[0:8])
			reclen := binary.NativeEndian.Uint16(b[16:18])
			name := string(bytes.TrimRight(b[19:reclen], "\x00"))
			b = b[reclen:]
			if name == "." || name == ".." {
				continue
			}
			var st unix.Stat_t
			if err := unix.Lstat(filepath.Join(e.path(dir), name), &st); err != nil {
				e.Errorf("lstat %s/%s: %v", dir, name, err)
				continue
			}
			if st.Ino != dino {
				e.Errorf("%s/%s: d_ino %d, st_ino %d", dir, name, dino, st.Ino)
			}
		}
	}
}

// checkNoPrivateXattrs: every xattr on the upper dir's entries is either
// one the fixture set or overlay's own trusted.overlay.*.
func checkNoPrivateXattrs(e *env) {
	known := map[string]bool{"user.a": true, "trusted.t": true, "user.d": true}
	_ = filepath.WalkDir(e.layers.Upper, func(p string, _ os.DirEntry, err error) error {
		if err != nil {
			return nil
		}
		names, err := listxattr(p)
		if err != nil {
			e.Errorf("listxattr %s: %v", p, err)
		}
		for _, n := range names {
			if !known[n] && !strings.HasPrefix(n, "trusted.overlay.") && !strings.HasPrefix(n, "security.") {
				e.Errorf("upper %s carries %s", strings.TrimPrefix(p, e.layers.Upper), n)
			}
		}
		return nil
	})
}

// checkNlink checks one name's link count.
func checkNlink(name string, n uint64) func(*env) {
	return func(e *env) {
		var st unix.Stat_t
		if err := unix.Lstat(e.path(name), &st); err != nil {
			e.Errorf("lstat %s: %v", name, err)
		} else if st.Nlink != n {
			e.Errorf("%s: nlink %d, want %d", name, st.Nlink, n)
		}
	}
}

// checkPermissions runs shell commands as uid/gid 1000 (setpriv) in the
// mount: the union checks permissions as the caller.
func checkPermissions(e *env) {
	setpriv, err := exec.LookPath("setpriv")
	if err != nil {
		e.t.Skip("setpriv (util-linux) is not installed")
	}
	for _, c := range []struct {
		script string
		ok     bool
	}{
		{"cat secret", false},
		{"cat ro", true},
		{"echo x >> ro", false},
		{"touch closed/n", false},
		{"rm ro", false},
		{"chmod 777 ro", false},
		{"rm tmp/root-owned", false}, // sticky directory
		{"echo n > tmp/new", true},
		{"echo + >> mine", true},
		{"truncate -s 0 secret", false},
	} {
		cmd := exec.Command(setpriv, "--reuid=1000", "--regid=1000", "--clear-groups", "sh", "-c", c.script)
		cmd.Dir = e.mnt
		out, err := cmd.CombinedOutput()
		if (err == nil) != c.ok {
			e.Errorf("as uid 1000, %q: %v, want success %v (%s)", c.script, err, c.ok, strings.TrimSpace(string(out)))
		}
	}
	// "echo + >> mine" wrote "+\n"; make the content what want says.
	if err := os.Truncate(e.path("mine"), 2); err != nil {
		e.Errorf("truncate mine: %v", err)
	}
	if err := os.Truncate(e.path("tmp/new"), 1); err != nil {
		e.Errorf("truncate tmp/new: %v", err)
	}
}
