package fs_test

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/lamina-project/lamina/driver"
	"github.com/lamina-project/lamina/internal/fsops"
	"github.com/lamina-project/lamina/internal/testutil"
)

// laminafsOver mounts laminafs over a lower dir made by fill, with an
// empty upper, and returns the lower dir and the mount point.
func laminafsOver(t *testing.T, fill func(lower string)) (lower, mnt string) {
	t.Helper()
	testutil.RequirePrivileged(t)
	base := t.TempDir()
	lower = filepath.Join(base, "l")
	for _, d := range []string{"l", "u", "w"} {
		os.Mkdir(filepath.Join(base, d), 0o755)
	}
	fill(lower)
	l := driver.Layers{Lower: []string{lower}, Upper: filepath.Join(base, "u"), Work: filepath.Join(base, "w")}
	return lower, fsops.Mount(t, fsops.Laminafs(t), l)
}

// A lower file open for reading is served by FUSE passthrough from the
// lower file. Copying it up while that descriptor is open must neither
// send later writes into the lower layer (the kernel keeps one backing
// file per inode) nor make later opens fail.
func TestCopyUpWhileLowerFileOpen(t *testing.T) {
	const n = 200
	lower, mnt := laminafsOver(t, func(l string) {
		for i := 0; i < n; i++ {
			os.WriteFile(filepath.Join(l, fname(i)), []byte("lowerdata"), 0o644)
		}
	})
	for i := 0; i < n; i++ {
		p := filepath.Join(mnt, fname(i))
		r, err := os.Open(p)
		if err != nil {
			t.Fatal(err)
		}
		buf := make([]byte, 9)
		r.Read(buf)
		if err := os.Chmod(p, 0o666); err != nil { // copy-up with no open
			t.Fatal(err)
		}
		done := make(chan struct{})
		go func() { r.Close(); close(done) }() // races the open below
		w, err := os.OpenFile(p, os.O_RDWR, 0)
		if err != nil {
			t.Fatalf("open for writing after copy-up: %v", err)
		}
		if _, err := w.WriteAt([]byte("UPPR"), 0); err != nil {
			t.Fatalf("write after copy-up: %v", err)
		}
		w.Close()
		<-done
		if b, _ := os.ReadFile(p); string(b) != "UPPRrdata" {
			t.Fatalf("%s through the union: %q", p, b)
		}
	}
	for i := 0; i < n; i++ {
		if b, _ := os.ReadFile(filepath.Join(lower, fname(i))); string(b) != "lowerdata" {
			t.Fatalf("lower file %s changed to %q", fname(i), b)
		}
	}
}

// A running program from a lower layer keeps its lower file; the file
// can still be copied up, read and run again.
func TestCopyUpOfRunningBinary(t *testing.T) {
	_, mnt := laminafsOver(t, func(l string) {
		b, err := os.ReadFile("/bin/sleep")
		if err != nil {
			t.Skip(err)
		}
		os.WriteFile(filepath.Join(l, "prog"), b, 0o755)
	})
	prog := filepath.Join(mnt, "prog")
	running := exec.Command(prog, "10")
	if err := running.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { running.Process.Kill(); running.Wait() })
	if err := os.Chmod(prog, 0o700); err != nil {
		t.Fatal(err)
	}
	want, _ := os.ReadFile("/bin/sleep")
	got, err := os.ReadFile(prog)
	if err != nil || !bytes.Equal(got, want) {
		t.Fatalf("read after copy-up of a running binary: %v", err)
	}
	if out, err := exec.Command(prog, "0").CombinedOutput(); err != nil {
		t.Fatalf("run again after copy-up: %v %s", err, out)
	}
}

// As root the union's own markers are trusted.overlay.*; a user.overlay.*
// attribute is a container's own data and must not redirect a directory
// (to a path through a lower symlink to the host, say).
func TestUserOverlayXattrsAreData(t *testing.T) {
	secret := t.TempDir()
	os.WriteFile(filepath.Join(secret, "key"), []byte("TOPSECRET"), 0o600)
	base := t.TempDir()
	for _, d := range []string{"l", "u", "w"} {
		os.Mkdir(filepath.Join(base, d), 0o755)
	}
	os.Symlink("/", filepath.Join(base, "l", "x"))
	l := driver.Layers{Lower: []string{filepath.Join(base, "l")}, Upper: filepath.Join(base, "u"), Work: filepath.Join(base, "w")}
	testutil.RequirePrivileged(t)
	mnt, unmount := fsops.MountUntil(t, fsops.Laminafs(t), l)
	os.Mkdir(filepath.Join(mnt, "y"), 0o755)
	for _, name := range []string{"user.overlay.redirect", "trusted.overlay.redirect"} {
		if err := unix.Setxattr(filepath.Join(mnt, "y"), name, []byte("/x"+secret), 0); err != nil {
			t.Fatalf("setxattr %s: %v", name, err)
		}
	}
	unmount()
	mnt = fsops.Mount(t, fsops.Laminafs(t), l)
	if b, err := os.ReadFile(filepath.Join(mnt, "y", "key")); err == nil {
		t.Fatalf("a directory redirected by a user's xattr shows a host file: %q", b)
	}
}

// fname is a distinct file name for each i.
func fname(i int) string {
	return "f" + string(rune('a'+i/676%26)) + string(rune('a'+i/26%26)) + string(rune('a'+i%26))
}

// fchmod, fchown, futimens and ftruncate work on an open file whose last
// name is gone, as on any local filesystem (and kernel overlay).
func TestSetattrOfUnlinkedOpenFile(t *testing.T) {
	_, mnt := laminafsOver(t, func(string) {})
	p := filepath.Join(mnt, "x")
	f, err := os.OpenFile(p, os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := os.Remove(p); err != nil {
		t.Fatal(err)
	}
	fd := int(f.Fd())
	if err := unix.Fchmod(fd, 0o600); err != nil {
		t.Errorf("fchmod: %v", err)
	}
	if err := unix.Fchown(fd, 1000, 1000); err != nil {
		t.Errorf("fchown: %v", err)
	}
	if err := unix.Futimes(fd, []unix.Timeval{{Sec: 1}, {Sec: 2}}); err != nil {
		t.Errorf("futimes: %v", err)
	}
	if err := unix.Ftruncate(fd, 10); err != nil {
		t.Errorf("ftruncate: %v", err)
	}
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		t.Fatal(err)
	}
	if st.Mode&07777 != 0o600 || st.Uid != 1000 || st.Size != 10 {
		t.Errorf("after changes: mode %o uid %d size %d", st.Mode&07777, st.Uid, st.Size)
	}
}
