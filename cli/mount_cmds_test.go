package cli_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/moby/sys/mountinfo"
	"golang.org/x/sys/unix"

	"github.com/lamina-project/lamina/internal/testutil"
)

func TestMountImage(t *testing.T) {
	testutil.RequirePrivileged(t)
	testutil.Binary(t, "laminafs") // mount finds it next to lamina
	root := t.TempDir()
	ok(t, root, "import", busyboxTarFile(t), "bb:1")
	t.Cleanup(func() {
		run(t, root, nil, "unmount", "--all")
		// Whatever a failure left behind must not hang the next run.
		infos, _ := mountinfo.GetMounts(mountinfo.PrefixFilter(root))
		for _, m := range infos {
			_ = unix.Unmount(m.Mountpoint, unix.MNT_DETACH)
		}
	})

	dir := strings.TrimSpace(ok(t, root, "mount", "bb:1"))
	if b, err := os.ReadFile(filepath.Join(dir, "etc/passwd")); err != nil || !strings.Contains(string(b), "root:") {
		t.Fatalf("image file through the mount: %q %v", b, err)
	}
	if err := os.WriteFile(filepath.Join(dir, "new"), nil, 0o644); err == nil || !os.IsPermission(err) && !strings.Contains(err.Error(), "read-only") {
		t.Errorf("write to an image mount: %v, want read-only file system", err)
	}
	// Mounting again gives the same mount.
	if again := strings.TrimSpace(ok(t, root, "mount", "bb:1")); again != dir {
		t.Errorf("second mount at %s, first at %s", again, dir)
	}
	list := ok(t, root, "mount")
	if !strings.Contains(list, dir) || !strings.Contains(list, "bb:1") {
		t.Errorf("mount list does not show the mount:\n%s", list)
	}
	// The image cannot be removed while mounted.
	if _, stderr, code := run(t, root, nil, "rmi", "bb:1"); code == 0 {
		t.Errorf("rmi of a mounted image succeeded")
	} else if !strings.HasPrefix(stderr, "lamina: ") {
		t.Errorf("rmi error %q", stderr)
	}
	// Nor after a prune: garbage collection must not take the mount's
	// hold for the stale ref of a container that is gone.
	ok(t, root, "image", "prune", "-a", "-f")
	if _, _, code := run(t, root, nil, "rmi", "bb:1"); code == 0 {
		t.Errorf("rmi of a mounted image succeeded after image prune")
	}
	if _, err := os.Stat(filepath.Join(dir, "bin/busybox")); err != nil {
		t.Errorf("mounted image's content after prune and rmi: %v", err)
	}

	// One layer alone, at a directory of our choosing.
	ldir := filepath.Join(t.TempDir(), "layer")
	os.Mkdir(ldir, 0o755)
	if got := strings.TrimSpace(ok(t, root, "mount", "--layer", "1", "bb:1", ldir)); got != ldir {
		t.Errorf("layer mount at %s, want %s", got, ldir)
	}
	if _, err := os.Stat(filepath.Join(ldir, "bin/busybox")); err != nil {
		t.Errorf("layer content: %v", err)
	}
	if _, stderr, code := run(t, root, nil, "mount", "--layer", "2", "bb:1"); code != 125 || !strings.Contains(stderr, "layers 1 to 1") {
		t.Errorf("--layer 2: exit %d %q", code, stderr)
	}
	if _, stderr, code := run(t, root, nil, "mount", "nosuchimage"); code != 125 || !strings.HasPrefix(stderr, "lamina: ") {
		t.Errorf("mount of a missing image: exit %d %q", code, stderr)
	}

	// Layers listing.
	layers := ok(t, root, "layers", "bb:1")
	if !strings.Contains(layers, "LAYER") || !strings.Contains(layers, filepath.Join(root, "layers")) {
		t.Errorf("layers:\n%s", layers)
	}

	ok(t, root, "unmount", ldir)
	ok(t, root, "unmount", "bb:1")
	for _, d := range []string{dir, ldir} {
		if m, _ := mountinfo.Mounted(d); m {
			t.Errorf("%s still mounted", d)
		}
	}
	if _, _, code := run(t, root, nil, "unmount", "bb:1"); code == 0 {
		t.Error("unmount of something not mounted succeeded")
	}
	// Now rmi works, and the store is clean.
	ok(t, root, "rmi", "bb:1")
	if out := ok(t, root, "system", "fsck"); !strings.Contains(out, "clean") {
		t.Errorf("fsck after unmount and rmi: %s", out)
	}
}

func TestMountContainer(t *testing.T) {
	testutil.RequirePrivileged(t)
	testutil.Binary(t, "laminafs")
	root := t.TempDir()
	ok(t, root, "import", busyboxTarFile(t), "bb:1")
	t.Cleanup(func() {
		run(t, root, nil, "rm", "-f", "c1", "c2")
		run(t, root, nil, "unmount", "--all")
		infos, _ := mountinfo.GetMounts(mountinfo.PrefixFilter(root))
		for _, m := range infos {
			_ = unix.Unmount(m.Mountpoint, unix.MNT_DETACH)
		}
	})

	// A stopped container: its read-write layer is on top, and writes
	// through the mount are the container's.
	ok(t, root, "run", "--name", "c1", "bb:1", "sh", "-c", "cat /outside 2>/dev/null; echo made-inside > /inside")
	dir := strings.TrimSpace(ok(t, root, "mount", "c1"))
	if b, err := os.ReadFile(filepath.Join(dir, "inside")); err != nil || string(b) != "made-inside\n" {
		t.Fatalf("container file through the mount: %q %v", b, err)
	}
	if err := os.WriteFile(filepath.Join(dir, "outside"), []byte("made-outside\n"), 0o644); err != nil {
		t.Fatalf("write through a container mount: %v", err)
	}
	if list := ok(t, root, "mount"); !strings.Contains(list, "container") || !strings.Contains(list, dir) {
		t.Errorf("mount list:\n%s", list)
	}
	ok(t, root, "unmount", "c1")
	if m, _ := mountinfo.Mounted(dir); m {
		t.Fatalf("%s still mounted", dir)
	}
	// The container sees what was written through the mount.
	if out := ok(t, root, "start", "-a", "c1"); out != "made-outside\n" {
		t.Errorf("second start printed %q, want the file written through the mount", out)
	}
	if _, _, code := run(t, root, nil, "mount", "--layer", "1", "c1"); code != 125 {
		t.Errorf("--layer on a container: exit %d, want 125", code)
	}

	// A running container: its live view, served by its monitor.
	ok(t, root, "run", "-d", "--name", "c2", "bb:1", "sh", "-c", "echo live > /live; sleep 60")
	var live string
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		live = strings.TrimSpace(ok(t, root, "mount", "c2"))
		if b, err := os.ReadFile(filepath.Join(live, "live")); err == nil && string(b) == "live\n" {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	if b, err := os.ReadFile(filepath.Join(live, "live")); err != nil || string(b) != "live\n" {
		t.Fatalf("running container's view at %s: %q %v", live, b, err)
	}
	// rm -f stops it and leaves nothing mounted.
	ok(t, root, "rm", "-f", "c2")
	if m, _ := mountinfo.Mounted(live); m {
		t.Errorf("%s still mounted after rm -f", live)
	}
}
