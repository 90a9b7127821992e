package driver_test

import (
	"bufio"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/moby/sys/mountinfo"
	"golang.org/x/sys/unix"

	"github.com/lamina-project/lamina/internal/fsops"
	"github.com/lamina-project/lamina/internal/testutil"
)

// TestForegroundServerDiesWithItsParent kills -9 a process that mounted
// laminafs in the foreground (as a test or a fuzz worker can be killed)
// and checks that the server takes its mount down rather than serving
// it on, orphaned.
func TestForegroundServerDiesWithItsParent(t *testing.T) {
	if dir := os.Getenv("FUSEBIN_TEST_CHILD"); dir != "" {
		// The child: mount, say where, and wait to be killed.
		f := fsops.NewFixture(t, fsops.Standard(), nil, false)
		mnt, _ := fsops.MountUntil(t, fsops.Laminafs(t), f.Layers)
		os.Stdout.WriteString(mnt + "\n")
		time.Sleep(time.Minute)
		return
	}
	testutil.RequirePrivileged(t)
	// Built here, and found there: the killed child could not remove
	// what it built.
	bin := testutil.Binary(t, "laminafs")
	cmd := exec.Command(os.Args[0], "-test.run=^TestForegroundServerDiesWithItsParent$", "-test.count=1")
	cmd.Env = append(os.Environ(), "FUSEBIN_TEST_CHILD=1", "LAMINA_BIN_DIR="+filepath.Dir(bin))
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	line, err := bufio.NewReader(out).ReadString('\n')
	mnt := strings.TrimSpace(line)
	if err != nil || !strings.HasPrefix(mnt, "/") {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		t.Fatalf("child did not mount: %q %v", line, err)
	}
	t.Cleanup(func() {
		_ = unix.Unmount(mnt, unix.MNT_DETACH)
		// The killed child's t.TempDir (TestForeground…/001/mnt-…),
		// which it could not remove.
		if dir := filepath.Dir(filepath.Dir(mnt)); strings.HasPrefix(filepath.Base(dir), "TestForegroundServerDiesWithItsParent") {
			_ = os.RemoveAll(dir)
		}
	})
	_ = cmd.Process.Signal(syscall.SIGKILL)
	_ = cmd.Wait()
	deadline := time.Now().Add(10 * time.Second)
	for {
		mounted, err := mountinfo.Mounted(mnt)
		if err == nil && !mounted {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s still mounted 10 s after its test process was killed (mounted %v, %v)", mnt, mounted, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
