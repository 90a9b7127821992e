package fsops

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/lamina-project/lamina/driver"
	"github.com/lamina-project/lamina/internal/testutil"
	"github.com/moby/sys/mountinfo"
	"golang.org/x/sys/unix"
)

// Fixture is a set of layer directories built for one test, in a
// t.TempDir: lower0 (the top lower), lower1, ..., upper, work.
type Fixture struct {
	Dir    string
	Layers driver.Layers
}

// NewFixture builds lowers (top first) and, unless readOnly, an upper dir
// holding upper and an empty workdir.
func NewFixture(t testing.TB, lowers [][]Spec, upper []Spec, readOnly bool) *Fixture {
	t.Helper()
	f := &Fixture{Dir: t.TempDir()}
	for i, specs := range lowers {
		d := filepath.Join(f.Dir, fmt.Sprintf("lower%d", i))
		mkdir(t, d)
		if err := Build(d, specs); err != nil {
			t.Fatal(err)
		}
		f.Layers.Lower = append(f.Layers.Lower, d)
	}
	if !readOnly {
		f.Layers.Upper = filepath.Join(f.Dir, "upper")
		f.Layers.Work = filepath.Join(f.Dir, "work")
		mkdir(t, f.Layers.Upper)
		mkdir(t, f.Layers.Work)
		if err := Build(f.Layers.Upper, upper); err != nil {
			t.Fatal(err)
		}
	}
	return f
}

func mkdir(t testing.TB, d string) {
	t.Helper()
	if err := os.Mkdir(d, 0o755); err != nil {
		t.Fatal(err)
	}
}

// Mount mounts l with d on a fresh directory and unmounts it when the test
// ends (even when it fails: a mount left behind hangs the next run).
func Mount(t testing.TB, d driver.Driver, l driver.Layers) string {
	t.Helper()
	mnt, err := os.MkdirTemp(fixtureDir(l), "mnt-")
	if err != nil {
		t.Fatal(err)
	}
	m, err := mountRetry(d, l, mnt)
	if err != nil {
		t.Fatalf("mount %s: %v", d.Name(), err)
	}
	t.Cleanup(func() {
		if err := m.Unmount(); err != nil {
			t.Errorf("unmount %s: %v", d.Name(), err)
		}
	})
	return mnt
}

// mountRetry mounts, retrying for a while on EBUSY: when layers are
// remounted, kernel overlay refuses an upper or work dir that a previous
// mount still holds, and a previous mount that something outside the test
// (a process walking /tmp) kept busy at unmount is detached lazily and
// lingers until that reference goes.
func mountRetry(d driver.Driver, l driver.Layers, mnt string) (driver.Mount, error) {
	for i := 0; ; i++ {
		m, err := d.Mount(l, mnt)
		if err == nil || !errors.Is(err, unix.EBUSY) || i == 50 {
			return m, err
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// fixtureDir is where a Fixture keeps l: mount points go there too, so
// that t.TempDir's removal (which runs after the unmount) takes them.
func fixtureDir(l driver.Layers) string {
	if len(l.Lower) > 0 {
		return filepath.Dir(l.Lower[0])
	}
	return filepath.Dir(l.Upper)
}

// Unmounter is what MountUntil returns: call it to unmount early.
type Unmounter func()

// MountUntil is Mount for tests that remount the same layers: the returned
// function unmounts (the cleanup then does nothing).
func MountUntil(t testing.TB, d driver.Driver, l driver.Layers) (string, Unmounter) {
	t.Helper()
	mnt, err := os.MkdirTemp(fixtureDir(l), "mnt-")
	if err != nil {
		t.Fatal(err)
	}
	m, err := mountRetry(d, l, mnt)
	if err != nil {
		t.Fatalf("mount %s: %v", d.Name(), err)
	}
	t.Cleanup(func() { _ = m.Unmount() })
	return mnt, func() {
		if err := m.Unmount(); err != nil {
			t.Errorf("unmount %s: %v", d.Name(), err)
		}
	}
}

// Overlay is kernel overlay as the oracle for laminafs: redirect_dir=on
// (renaming a lower directory works, as laminafs does it) and index=on
// (copy-up of a hard-linked lower file keeps the link). It is the driver
// the differential test and the fuzz target compare laminafs with.
func Overlay() driver.Driver {
	return driver.Overlay{Extra: []string{"redirect_dir=on", "index=on"}}
}

// OverlayPlain is kernel overlay as most systems mount it (containerd,
// docker): no redirects (EXDEV on renaming a lower directory) and no index
// (copy-up breaks hard links).
func OverlayPlain() driver.Driver {
	return driver.Overlay{Extra: []string{"redirect_dir=off", "index=off"}}
}

// The FUSE drivers run in the foreground (-f) as children of the test, so
// that Unmount waits until the server has exited and the upper dir is
// quiescent before a test looks at it.

// FuseOverlayfs is the peer, from $PATH.
func FuseOverlayfs() driver.Driver {
	return driver.FUSEBinary{DriverName: "fuse-overlayfs", Path: "fuse-overlayfs", Foreground: true}
}

var (
	laminafsOnce sync.Once
	laminafsErr  error
	laminafsStub bool
)

// Laminafs returns the laminafs driver, built from ./cmd/laminafs (or
// taken from $LAMINA_BIN_DIR). While laminafs is a stub that exits without
// mounting, the test is skipped; a laminafs that fails to mount in any
// other way fails it.
func Laminafs(t testing.TB) driver.Driver {
	t.Helper()
	bin := testutil.Binary(t, "laminafs")
	laminafsOnce.Do(func() { laminafsStub, laminafsErr = probe(bin) })
	if laminafsErr != nil {
		t.Fatalf("laminafs: %v", laminafsErr)
	}
	if laminafsStub {
		t.Skip("laminafs exits without mounting (not implemented yet)")
	}
	return driver.FUSEBinary{DriverName: "laminafs", Path: bin, Foreground: true}
}

// probe mounts an empty read-write union with laminafs in the foreground
// and reports whether it is a stub (exits 0 without ever mounting).
func probe(bin string) (stub bool, err error) {
	dir, err := os.MkdirTemp("", "laminafs-probe-")
	if err != nil {
		return false, err
	}
	defer os.RemoveAll(dir)
	for _, d := range []string{"lower", "upper", "work", "mnt"} {
		if err := os.Mkdir(filepath.Join(dir, d), 0o755); err != nil {
			return false, err
		}
	}
	l := driver.Layers{Lower: []string{filepath.Join(dir, "lower")},
		Upper: filepath.Join(dir, "upper"), Work: filepath.Join(dir, "work")}
	mnt := filepath.Join(dir, "mnt")
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, "-f", "-o", l.Options(), mnt)
	out, _ := os.CreateTemp(dir, "out-")
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		return false, err
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	for {
		if ok, _ := mountinfo.Mounted(mnt); ok {
			return false, unmountAndWait(mnt, done)
		}
		select {
		case werr := <-done:
			b, _ := os.ReadFile(out.Name())
			if werr == nil {
				return true, nil
			}
			return false, fmt.Errorf("exits without mounting: %v: %s", werr, b)
		case <-time.After(10 * time.Millisecond):
		}
	}
}

func unmountAndWait(mnt string, done chan error) error {
	if err := exec.Command("umount", mnt).Run(); err != nil {
		_ = exec.Command("umount", "-l", mnt).Run()
	}
	select {
	case <-done:
		return nil
	case <-time.After(10 * time.Second):
		return errors.New("laminafs -f did not exit after umount")
	}
}
