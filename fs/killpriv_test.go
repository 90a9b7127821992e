package fs_test

import (
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"

	"github.com/lamina-project/lamina/driver"
	"github.com/lamina-project/lamina/internal/fsops"
	"github.com/lamina-project/lamina/internal/testutil"
)

// laminafs negotiates HANDLE_KILLPRIV_V2: the kernel leaves clearing
// set-user-ID and set-group-ID bits on write, truncate and chown to the
// server. The bits must end up exactly as kernel overlay leaves them,
// for a caller without privileges as for root, through a write served by
// passthrough as through a path.
func TestSetIDBitsClearedLikeOverlay(t *testing.T) {
	testutil.RequirePrivileged(t)
	testutil.RequireCommand(t, "truncate", true)
	type file struct {
		name string
		mode os.FileMode
	}
	files := []file{
		{"uw", 0o4777 | os.ModeSetuid},                 // written by a user
		{"gw", 0o2777 | os.ModeSetgid},                 // written by a user, group-executable
		{"gn", 0o2666 | os.ModeSetgid},                 // written by a user, not group-executable
		{"ut", 0o4777 | os.ModeSetuid},                 // truncated by a user
		{"gt", 0o2666 | os.ModeSetgid},                 // truncated by a user, not group-executable
		{"ot", 0o6777 | os.ModeSetuid | os.ModeSetgid}, // opened O_TRUNC by a user
		{"rw", 0o4755 | os.ModeSetuid},                 // written by root
		{"rc", 0o6755 | os.ModeSetuid | os.ModeSetgid}, // chowned by root
		{"rk", 0o4755 | os.ModeSetuid},                 // chowned by root to the same owner
	}
	// As uid/gid 1000, which is not in the files' group (0).
	userScript := `set -e
printf x >> uw; printf x >> gw; printf x >> gn
truncate -s 1 ut; truncate -s 1 gt
: > ot`
	rootScript := `set -e
printf x >> rw; chown 1000:1000 rc; chown 0:0 rk`
	modes := map[string]map[string]os.FileMode{}
	for _, d := range []struct {
		name string
		drv  driver.Driver
	}{{"overlay", fsops.Overlay()}, {"laminafs", fsops.Laminafs(t)}} {
		base := t.TempDir()
		// The user must be able to reach the mount point.
		for _, p := range []string{filepath.Dir(base), base} {
			if err := os.Chmod(p, 0o755); err != nil {
				t.Fatal(err)
			}
		}
		mkdirs(t, base, "l", "u", "w")
		for _, f := range files {
			p := filepath.Join(base, "l", f.name)
			if err := os.WriteFile(p, []byte("data"), 0o644); err != nil {
				t.Fatal(err)
			}
			if err := os.Chmod(p, f.mode); err != nil {
				t.Fatal(err)
			}
		}
		mnt := fsops.Mount(t, d.drv, driver.Layers{Lower: []string{filepath.Join(base, "l")},
			Upper: filepath.Join(base, "u"), Work: filepath.Join(base, "w")})
		if err := os.Chmod(mnt, 0o777); err != nil {
			t.Fatal(err)
		}
		user := exec.Command("sh", "-c", userScript)
		user.Dir = mnt
		user.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 1000, Gid: 1000}}
		if out, err := user.CombinedOutput(); err != nil {
			t.Fatalf("%s: as uid 1000: %v: %s", d.name, err, out)
		}
		root := exec.Command("sh", "-c", rootScript)
		root.Dir = mnt
		if out, err := root.CombinedOutput(); err != nil {
			t.Fatalf("%s: as root: %v: %s", d.name, err, out)
		}
		modes[d.name] = map[string]os.FileMode{}
		for _, f := range files {
			st, err := os.Lstat(filepath.Join(mnt, f.name))
			if err != nil {
				t.Fatal(err)
			}
			modes[d.name][f.name] = st.Mode()
		}
	}
	for _, f := range files {
		want, got := modes["overlay"][f.name], modes["laminafs"][f.name]
		if want != got {
			t.Errorf("%s (was %v): overlay leaves %v, laminafs %v", f.name, f.mode, want, got)
		}
	}
	if m := modes["overlay"]["uw"]; m&os.ModeSetuid != 0 {
		t.Errorf("overlay kept set-user-ID on a user's write (%v): the test's premise is wrong", m)
	}
}
