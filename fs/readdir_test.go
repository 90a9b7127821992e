package fs_test

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/lamina-project/lamina/driver"
	"github.com/lamina-project/lamina/internal/fsops"
	"github.com/lamina-project/lamina/internal/testutil"
)

type namedDriver struct {
	name string
	drv  driver.Driver
}

// mkdirs makes each of the directories subs (with their parents) under
// base.
func mkdirs(t *testing.T, base string, subs ...string) {
	t.Helper()
	for _, sub := range subs {
		if err := os.MkdirAll(filepath.Join(base, sub), 0o755); err != nil {
			t.Fatal(err)
		}
	}
}

// overlayAndLaminafs are the oracle and the driver under test, in that
// order.
func overlayAndLaminafs(t *testing.T) []namedDriver {
	return []namedDriver{{"overlay", fsops.Overlay()}, {"laminafs", fsops.Laminafs(t)}}
}

// A readdirplus makes the nodes of the lower files it lists from the
// listing, without resolving their names again (dirHandle.Lookup). A
// directory read in several parts whose later names change in between
// (copy-up, a whiteout, a file shadowed in a higher layer) must still
// show each name as kernel overlay does when it is stat'ed afterwards.
func TestReaddirplusAfterChangeLikeOverlay(t *testing.T) {
	testutil.RequirePrivileged(t)
	const n = 1000
	name := func(i int) string { return fmt.Sprintf("f%04d", i) }
	// Names near the end of the listing, which the first read does not
	// reach.
	chmodded, removed, written, shadowed, ociHidden := name(n-10), name(n-9), name(n-8), name(n-7), name(n-6)
	results := map[string]map[string]string{}
	for _, d := range overlayAndLaminafs(t) {
		base := t.TempDir()
		mkdirs(t, base, "l0/d", "l1/d", "u", "w")
		for i := 0; i < n; i++ {
			if err := os.WriteFile(filepath.Join(base, "l1/d", name(i)), []byte("lower"), 0o644); err != nil {
				t.Fatal(err)
			}
		}
		// The top layer holds one name again, with other attributes, and
		// whites out another, OCI style.
		if err := os.WriteFile(filepath.Join(base, "l0/d", shadowed), []byte("top layer"), 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(base, "l0/d", ".wh."+ociHidden), nil, 0o644); err != nil {
			t.Fatal(err)
		}
		drv := d.drv
		if d.name == "overlay" {
			// Kernel overlay does not know OCI whiteouts: give it the
			// kernel's kind.
			if err := os.Remove(filepath.Join(base, "l0/d", ".wh."+ociHidden)); err != nil {
				t.Fatal(err)
			}
			if err := unix.Mknod(filepath.Join(base, "l0/d", ociHidden), unix.S_IFCHR, 0); err != nil {
				t.Fatal(err)
			}
		}
		mnt := fsops.Mount(t, drv, driver.Layers{
			Lower: []string{filepath.Join(base, "l0"), filepath.Join(base, "l1")},
			Upper: filepath.Join(base, "u"), Work: filepath.Join(base, "w")})
		dir := filepath.Join(mnt, "d")
		names := readInTwo(t, dir, func() {
			if err := os.Chmod(filepath.Join(dir, chmodded), 0o600); err != nil {
				t.Fatal(err)
			}
			if err := os.Remove(filepath.Join(dir, removed)); err != nil {
				t.Fatal(err)
			}
			f, err := os.OpenFile(filepath.Join(dir, written), os.O_WRONLY|os.O_APPEND, 0)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := f.WriteString(" and more"); err != nil {
				t.Fatal(err)
			}
			if err := f.Close(); err != nil {
				t.Fatal(err)
			}
		})
		res := map[string]string{}
		for _, nm := range names {
			var st unix.Stat_t
			if err := unix.Lstat(filepath.Join(dir, nm), &st); err != nil {
				res[nm] = err.Error()
				continue
			}
			res[nm] = fmt.Sprintf("mode %o size %d nlink %d", st.Mode, st.Size, st.Nlink)
		}
		results[d.name] = res
	}
	want, got := results["overlay"], results["laminafs"]
	for nm, w := range want {
		if got[nm] != w {
			t.Errorf("%s: overlay shows %s, laminafs %q", nm, w, got[nm])
		}
	}
	if len(got) != len(want) {
		t.Errorf("overlay lists %d names, laminafs %d", len(want), len(got))
	}
	// The test's premise: the changes are what overlay shows.
	if w := want[chmodded]; w != fmt.Sprintf("mode %o size 5 nlink 1", unix.S_IFREG|0o600) {
		t.Errorf("overlay shows %s as %s", chmodded, w)
	}
	if w, ok := want[removed]; ok && w != syscall.ENOENT.Error() {
		t.Errorf("overlay shows removed %s as %s", removed, w)
	}
}

// readInTwo lists dir with a small buffer, calling between after the
// first read, and returns the names listed (without "." and "..").
func readInTwo(t *testing.T, dir string, between func()) []string {
	t.Helper()
	fd, err := unix.Open(dir, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fd)
	var names []string
	buf := make([]byte, 4096)
	for i := 0; ; i++ {
		if i == 1 {
			between()
		}
		k, err := unix.Getdents(fd, buf)
		if errors.Is(err, syscall.EINTR) {
			continue
		}
		if err != nil {
			t.Fatal(err)
		}
		if k == 0 {
			break
		}
		_, _, names = unix.ParseDirent(buf[:k], -1, names)
	}
	return names
}

// Files and directories with no permission bits show as mode 000, as
// kernel overlay shows them, whether found by a lookup (directory "look")
// or by a readdirplus (directory "list", read before any lookup).
func TestNoPermissionBitsLikeOverlay(t *testing.T) {
	testutil.RequirePrivileged(t)
	modes := map[string]map[string]string{}
	for _, d := range overlayAndLaminafs(t) {
		base := t.TempDir()
		mkdirs(t, base, "l0/look", "l0/list", "u", "w")
		for _, dir := range []string{"look", "list"} {
			f, dd := filepath.Join(base, "l0", dir, "none"), filepath.Join(base, "l0", dir, "nonedir")
			if err := os.WriteFile(f, nil, 0); err != nil {
				t.Fatal(err)
			}
			if err := os.Mkdir(dd, 0); err != nil {
				t.Fatal(err)
			}
			for _, p := range []string{f, dd} {
				if err := os.Chmod(p, 0); err != nil {
					t.Fatal(err)
				}
			}
		}
		mnt := fsops.Mount(t, d.drv, driver.Layers{Lower: []string{filepath.Join(base, "l0")},
			Upper: filepath.Join(base, "u"), Work: filepath.Join(base, "w")})
		if _, err := os.ReadDir(filepath.Join(mnt, "list")); err != nil {
			t.Fatal(err)
		}
		got := map[string]string{}
		for _, dir := range []string{"look", "list"} {
			for _, nm := range []string{"none", "nonedir"} {
				var st unix.Stat_t
				if err := unix.Lstat(filepath.Join(mnt, dir, nm), &st); err != nil {
					t.Fatal(err)
				}
				got[dir+"/"+nm] = fmt.Sprintf("%o", st.Mode)
			}
		}
		modes[d.name] = got
	}
	for k, w := range modes["overlay"] {
		if g := modes["laminafs"][k]; g != w {
			t.Errorf("%s: laminafs mode %s, overlay %s", k, g, w)
		}
	}
}
