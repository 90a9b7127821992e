package cow

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/lamina-project/lamina/internal/testutil"
)

// dirs makes a lower, upper and work dir on the same filesystem.
func dirs(t *testing.T) (lower, upper, work string, upperfd int) {
	t.Helper()
	base := t.TempDir()
	lower, upper, work = filepath.Join(base, "l"), filepath.Join(base, "u"), filepath.Join(base, "w")
	for _, d := range []string{lower, upper, work} {
		if err := os.Mkdir(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	fd, err := unix.Open(upper, unix.O_PATH|unix.O_DIRECTORY, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Close(fd) })
	return lower, upper, work, fd
}

func TestCopyUpKeepsDataHolesAndMetadata(t *testing.T) {
	testutil.RequirePrivileged(t) // chown to another user and trusted.* xattrs
	lower, upper, work, ufd := dirs(t)
	src := filepath.Join(lower, "f")
	f, err := os.Create(src)
	if err != nil {
		t.Fatal(err)
	}
	// 1 MiB data, a 64 MiB hole, 1 MiB data.
	data := bytes.Repeat([]byte("lamina"), 1<<20/6)
	if _, err := f.WriteAt(data, 0); err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteAt(data, 65<<20); err != nil {
		t.Fatal(err)
	}
	f.Close()
	if err := os.Chown(src, 1234, 5678); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(src, 0o4751); err != nil {
		t.Fatal(err)
	}
	for name, val := range map[string]string{"user.a": "1", "trusted.b": "2", "trusted.overlay.opaque": "y"} {
		if err := unix.Lsetxattr(src, name, []byte(val), 0); err != nil {
			t.Fatal(err)
		}
	}
	mtime := unix.NsecToTimespec(1_500_000_000_123_456_789)
	if err := unix.UtimesNanoAt(unix.AT_FDCWD, src, []unix.Timespec{mtime, mtime}, 0); err != nil {
		t.Fatal(err)
	}
	if err := CopyUp(src, work, ufd, "f", false); err != nil {
		t.Fatal(err)
	}
	dst := filepath.Join(upper, "f")
	var s1, s2 unix.Stat_t
	unix.Lstat(src, &s1)
	unix.Lstat(dst, &s2)
	if s2.Size != s1.Size || s2.Mode != s1.Mode || s2.Uid != 1234 || s2.Gid != 5678 || s2.Mtim != s1.Mtim {
		t.Errorf("copy: size %d mode %o uid %d gid %d mtime %v; want %d %o 1234 5678 %v", s2.Size, s2.Mode, s2.Uid, s2.Gid, s2.Mtim, s1.Size, s1.Mode, s1.Mtim)
	}
	if s2.Blocks > s1.Blocks+64 {
		t.Errorf("holes not kept: %d blocks, lower has %d", s2.Blocks, s1.Blocks)
	}
	a, _ := os.ReadFile(src)
	b, _ := os.ReadFile(dst)
	if !bytes.Equal(a, b) {
		t.Error("data differs")
	}
	if v, err := GetXattr(dst, "user.a"); err != nil || string(v) != "1" {
		t.Errorf("user.a = %q, %v", v, err)
	}
	if v, err := GetXattr(dst, "trusted.b"); err != nil || string(v) != "2" {
		t.Errorf("trusted.b = %q, %v", v, err)
	}
	if _, err := GetXattr(dst, "trusted.overlay.opaque"); err == nil {
		t.Error("overlay's private xattr was copied")
	}
	if ents, _ := os.ReadDir(work); len(ents) != 0 {
		t.Errorf("work dir not clean: %v", ents)
	}
}

func TestCopyUpTypes(t *testing.T) {
	testutil.RequirePrivileged(t) // mknod
	lower, upper, work, ufd := dirs(t)
	mk := map[string]func(p string) error{
		"dir":     func(p string) error { return os.Mkdir(p, 0o710) },
		"symlink": func(p string) error { return os.Symlink("../target", p) },
		"fifo":    func(p string) error { return unix.Mkfifo(p, 0o640) },
		"chardev": func(p string) error { return unix.Mknod(p, unix.S_IFCHR|0o600, int(unix.Mkdev(1, 3))) },
		"empty":   func(p string) error { return os.WriteFile(p, nil, 0o600) },
	}
	for name, make := range mk {
		t.Run(name, func(t *testing.T) {
			src := filepath.Join(lower, name)
			if err := make(src); err != nil {
				t.Fatal(err)
			}
			if err := CopyUp(src, work, ufd, name, false); err != nil {
				t.Fatal(err)
			}
			var s1, s2 unix.Stat_t
			unix.Lstat(src, &s1)
			if err := unix.Lstat(filepath.Join(upper, name), &s2); err != nil {
				t.Fatal(err)
			}
			if s1.Mode != s2.Mode || s1.Rdev != s2.Rdev || s1.Mtim != s2.Mtim {
				t.Errorf("mode %o rdev %d mtime %v, want %o %d %v", s2.Mode, s2.Rdev, s2.Mtim, s1.Mode, s1.Rdev, s1.Mtim)
			}
			if name == "symlink" {
				if l, _ := os.Readlink(filepath.Join(upper, name)); l != "../target" {
					t.Errorf("link target %q", l)
				}
			}
		})
	}
}

func TestCopyUpNoDataAndReplacesWhiteout(t *testing.T) {
	testutil.RequirePrivileged(t)
	lower, upper, work, ufd := dirs(t)
	src := filepath.Join(lower, "f")
	if err := os.WriteFile(src, []byte("old data"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := unix.Mknod(filepath.Join(upper, "f"), unix.S_IFCHR, 0); err != nil {
		t.Fatal(err)
	}
	if err := CopyUp(src, work, ufd, "f", true); err != nil {
		t.Fatal(err)
	}
	st, err := os.Lstat(filepath.Join(upper, "f"))
	if err != nil || !st.Mode().IsRegular() || st.Size() != 0 {
		t.Fatalf("after copy-up without data: %v %v", st, err)
	}
}

func TestWhiteoutsAndOpaque(t *testing.T) {
	testutil.RequirePrivileged(t)
	_, upper, work, ufd := dirs(t)
	// A whiteout replaces a file, and a directory with its contents.
	if err := os.WriteFile(filepath.Join(upper, "f"), []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Join(upper, "d/sub"), 0o755); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"f", "d", "new"} {
		if err := MakeWhiteout(work, ufd, name); err != nil {
			t.Fatal(err)
		}
		var st unix.Stat_t
		if err := unix.Lstat(filepath.Join(upper, name), &st); err != nil || !IsWhiteoutStat(&st) {
			t.Errorf("%s: not a whiteout (%v)", name, err)
		}
	}
	if ents, _ := os.ReadDir(work); len(ents) != 0 {
		t.Errorf("work dir not clean: %v", ents)
	}
	d := filepath.Join(upper, "o")
	os.Mkdir(d, 0o755)
	if TrustedNS.IsOpaque(d) {
		t.Error("new dir is opaque")
	}
	if err := SetOpaque(TrustedNS, d); err != nil {
		t.Fatal(err)
	}
	if !TrustedNS.IsOpaque(d) {
		t.Error("opaque dir not seen")
	}
	// RemoveWhiteouts removes only whiteouts.
	unix.Mknod(filepath.Join(d, "w"), unix.S_IFCHR, 0)
	if err := RemoveWhiteouts(d); err != nil {
		t.Fatal(err)
	}
	os.WriteFile(filepath.Join(d, "real"), nil, 0o644)
	if err := RemoveWhiteouts(d); err != unix.ENOTEMPTY {
		t.Errorf("RemoveWhiteouts on a real entry: %v, want ENOTEMPTY", err)
	}
}
