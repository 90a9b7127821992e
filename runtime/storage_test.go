package runtime

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/lamina-project/lamina/driver"
	"github.com/lamina-project/lamina/internal/testutil"
	"github.com/moby/sys/mountinfo"
)

// TestUnmountThenSettled: a laminafs union's Unmount returns once the
// union is gone from the mount table, and Settled then waits for its
// server to end. (The case of a file of the union held open, where
// Settled aborts the connection, needs a holder outside the server's
// process: cli's TestStopWithFileHeldOutside.)
func TestUnmountThenSettled(t *testing.T) {
	testutil.RequirePrivileged(t)
	dir := t.TempDir()
	lower := filepath.Join(dir, "lower")
	target := filepath.Join(dir, "merged")
	for _, d := range []string{lower, target, filepath.Join(dir, "upper"), filepath.Join(dir, "work")} {
		if err := os.Mkdir(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	m, err := laminafs{}.Mount(driver.Layers{Lower: []string{lower}, Upper: filepath.Join(dir, "upper"), Work: filepath.Join(dir, "work")}, target)
	if err != nil {
		t.Fatal(err)
	}
	sm := m.(*serverMount)
	if err := sm.Unmount(); err != nil {
		t.Fatalf("unmount: %v", err)
	}
	if mounted, err := mountinfo.Mounted(target); err != nil || mounted {
		t.Fatalf("still mounted after Unmount (%v)", err)
	}
	if err := sm.Settled(); err != nil {
		t.Fatalf("settled: %v", err)
	}
	sm.srv.Wait() // returns at once: the server has ended
	if err := sm.Settled(); err != nil {
		t.Fatalf("second settled: %v", err)
	}
}

// TestStartPaths: what a laminafs mount reads ahead for a start are the
// paths init looks up first, its mount points and the command's
// candidates along PATH.
func TestStartPaths(t *testing.T) {
	for _, tt := range []struct {
		name string
		o    Options
		want []string // among the paths
		not  []string
	}{
		{"absolute", Options{Args: []string{"/bin/true"}}, []string{"/proc", "/dev", "/etc/hosts", "/etc/resolv.conf", "/bin/true"}, []string{"/usr/bin/true"}},
		{"along PATH", Options{Args: []string{"true"}, Env: []string{"PATH=/bin:relative:/usr/bin"}}, []string{"/bin/true", "/usr/bin/true"}, []string{"relative/true", "/usr/local/bin/true"}},
		{"default PATH", Options{Args: []string{"sh"}}, []string{"/usr/local/sbin/sh", "/bin/sh"}, nil},
	} {
		spec, err := NewSpec("0123456789abcdef", "/r", tt.o)
		if err != nil {
			t.Fatal(err)
		}
		got := map[string]bool{}
		for _, p := range startPaths(spec) {
			got[p] = true
		}
		for _, w := range tt.want {
			if !got[w] {
				t.Errorf("%s: %q not among %v", tt.name, w, startPaths(spec))
			}
		}
		for _, n := range tt.not {
			if got[n] {
				t.Errorf("%s: %q among %v", tt.name, n, startPaths(spec))
			}
		}
	}
}
