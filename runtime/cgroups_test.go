package runtime

import (
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/lamina-project/lamina/internal/testutil"
)

// TestEarlyCgroup: the cgroup a monitor makes for the container ID it is
// told ahead (PrepareHere) becomes that container's, with its limits and
// its init in it, and it is removed whenever it is not taken.
func TestEarlyCgroup(t *testing.T) {
	testutil.RequirePrivileged(t)
	spec, err := NewSpec("x", "/", Options{Args: []string{"true"}, CPUs: 0.5, Memory: 64 << 20})
	if err != nil {
		t.Fatal(err)
	}
	r := spec.Linux.Resources
	// sleeper stands for a container's init: a process of its own, killed
	// and reaped when the test ends.
	sleeper := func(t *testing.T) *exec.Cmd {
		cmd := exec.Command("sleep", "60")
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
		return cmd
	}
	in := func(t *testing.T, cg *Cgroup, pid int) bool {
		t.Helper()
		for c, dir := range cg.Paths {
			b, err := os.ReadFile(dir + "/cgroup.procs")
			if err != nil || !slices.Contains(strings.Fields(string(b)), strconv.Itoa(pid)) {
				t.Logf("%s (%s): pid %d not in %q (%v)", c, dir, pid, b, err)
				return false
			}
		}
		return len(cg.Paths) > 0
	}
	gone := func(t *testing.T, paths map[string]string) {
		t.Helper()
		if len(paths) == 0 {
			t.Fatal("the early cgroup was never made")
		}
		for _, dir := range paths {
			if _, err := os.Stat(dir); !os.IsNotExist(err) {
				t.Errorf("%s left behind (%v)", dir, err)
			}
		}
	}
	take := func(t *testing.T, m *monitor, id string, pid int) *Cgroup {
		t.Helper()
		cg, err := m.cgroup(id, pid, r)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = cg.Destroy() })
		if m.early != nil {
			t.Error("the early cgroup is still the monitor's once taken")
		}
		return cg
	}
	limits := func(t *testing.T, cg *Cgroup) {
		t.Helper()
		want := map[[2]string]string{{"cpu", "cpu.cfs_quota_us"}: "50000", {"memory", "memory.limit_in_bytes"}: "67108864"}
		if cg.V2 {
			want = map[[2]string]string{{"cpu", "cpu.max"}: "50000 100000", {"memory", "memory.max"}: "67108864"}
		}
		for k, v := range want {
			if got, err := cg.read(k[0], k[1]); err != nil || got != v {
				t.Errorf("%s = %q (%v), want %q", k[1], got, err, v)
			}
		}
	}

	t.Run("taken", func(t *testing.T) {
		id, init := NewID(), sleeper(t)
		m := &monitor{early: startEarlyCgroup(id, init.Process.Pid)}
		cg := take(t, m, id, init.Process.Pid)
		if !in(t, cg, init.Process.Pid) {
			t.Error("init is not in its container's cgroup")
		}
		for _, dir := range cg.Paths {
			if filepath.Base(dir) != id {
				t.Errorf("cgroup %s is not named after the container", dir)
			}
		}
		limits(t, cg)
	})
	t.Run("another init", func(t *testing.T) {
		// The init spawned ahead did not suit the container: the one
		// spawned for it goes into the early cgroup.
		id, ahead, init := NewID(), sleeper(t), sleeper(t)
		m := &monitor{early: startEarlyCgroup(id, ahead.Process.Pid)}
		cg := take(t, m, id, init.Process.Pid)
		if !in(t, cg, init.Process.Pid) {
			t.Error("the init spawned for the container is not in its cgroup")
		}
		limits(t, cg)
	})
	// made is a monitor with an early cgroup for another ID, made, with
	// init in it, and the cgroup's directories.
	made := func(t *testing.T, init *exec.Cmd) (*monitor, map[string]string) {
		t.Helper()
		e := startEarlyCgroup(NewID(), init.Process.Pid)
		if <-e.done; e.cg == nil {
			t.Fatal("the early cgroup was not made")
		}
		return &monitor{early: e}, e.cg.Paths
	}
	t.Run("another container", func(t *testing.T) {
		init := sleeper(t)
		m, early := made(t, init)
		cg := take(t, m, NewID(), init.Process.Pid)
		if !in(t, cg, init.Process.Pid) {
			t.Error("init is not in its container's cgroup")
		}
		gone(t, early)
	})
	t.Run("stale ones swept", func(t *testing.T) {
		// Empty container cgroups next to the new one: one made long ago
		// (what a killed lamina left), one just made (a start under way).
		init := sleeper(t)
		m, early := made(t, init)
		var stale, fresh []string
		for _, dir := range early {
			s, f := filepath.Join(filepath.Dir(dir), NewID()), filepath.Join(filepath.Dir(dir), NewID())
			for _, d := range []string{s, f} {
				if err := os.Mkdir(d, 0o755); err != nil {
					t.Fatal(err)
				}
				t.Cleanup(func() { _ = os.Remove(d) })
			}
			old := time.Now().Add(-2 * staleAge)
			if err := os.Chtimes(s, old, old); err != nil {
				t.Fatal(err)
			}
			stale, fresh = append(stale, s), append(fresh, f)
		}
		m.dropEarly()
		next := sleeper(t)
		m, _ = made(t, next)
		defer m.dropEarly()
		<-m.early.swept
		for _, d := range stale {
			if _, err := os.Stat(d); !os.IsNotExist(err) {
				t.Errorf("stale empty cgroup %s not swept (%v)", d, err)
			}
		}
		for _, d := range fresh {
			if _, err := os.Stat(d); err != nil {
				t.Errorf("a cgroup just made was swept: %v", err)
			}
		}
	})
	t.Run("never taken", func(t *testing.T) {
		init := sleeper(t)
		m, early := made(t, init)
		_ = init.Process.Kill()
		_ = init.Wait()
		m.dropEarly()
		gone(t, early)
	})
}

// TestMkCgroup checks that a container's cgroup is made even when the
// shared parent goes away at the wrong moment (another container's
// Destroy removing it as it empties), as happened to a start running
// beside another container's exit.
func TestMkCgroup(t *testing.T) {
	tests := []struct {
		name    string
		removes int // how many times the parent vanishes before the mkdir
		wantErr bool
	}{
		{"parent there", 0, false},
		{"parent removed once", 1, false},
		{"parent removed four times", 4, false},
		{"parent always removed", 100, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			parent := filepath.Join(t.TempDir(), "lamina")
			p := filepath.Join(parent, "ctr")
			removed := 0
			err := mkCgroup(p, func(dir string) {
				if dir != parent {
					t.Errorf("prepare got %s, want the parent %s", dir, parent)
				}
				if removed < tt.removes {
					removed++
					if err := os.Remove(dir); err != nil {
						t.Fatal(err)
					}
				}
			})
			if tt.wantErr {
				if err == nil {
					t.Fatal("no error with the parent always gone")
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if fi, err := os.Stat(p); err != nil || !fi.IsDir() {
				t.Fatalf("cgroup dir: %v", err)
			}
		})
	}
}
