package runtime

import (
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/lamina-project/lamina/internal/testutil"
	"golang.org/x/sys/unix"
)

// TestSpawnAhead: an init spawned ahead for a container ID is put into
// that container's cgroups; discarded untaken, it is killed and its
// cgroups removed; taken by a monitor, Discard leaves both alone.
func TestSpawnAhead(t *testing.T) {
	testutil.RequirePrivileged(t)
	inAll := func(t *testing.T, e *earlyCgroup, pid int) {
		t.Helper()
		if <-e.done; e.cg == nil {
			t.Fatal("the early cgroup was not made")
		}
		for c, dir := range e.cg.Paths {
			if filepath.Base(dir) != e.id {
				t.Errorf("%s cgroup %s is not the container's", c, dir)
			}
			b, err := os.ReadFile(filepath.Join(dir, "cgroup.procs"))
			if err != nil || !slices.Contains(strings.Fields(string(b)), strconv.Itoa(pid)) {
				t.Errorf("%s: init %d not in %s (%q, %v)", c, pid, dir, b, err)
			}
		}
	}
	t.Run("discarded", func(t *testing.T) {
		id := NewID()
		a := SpawnAhead(id)
		if <-a.done; a.ip == nil || a.early == nil {
			t.Fatalf("spawned %v, early cgroup %v", a.ip, a.early)
		}
		pid := a.ip.Pid()
		inAll(t, a.early, pid)
		paths := a.early.cg.Paths
		a.Discard()
		if err := unix.Kill(pid, 0); err != unix.ESRCH {
			t.Errorf("the discarded init %d is still there (%v)", pid, err)
		}
		for _, dir := range paths {
			if _, err := os.Stat(dir); !os.IsNotExist(err) {
				t.Errorf("%s left behind (%v)", dir, err)
			}
		}
	})
	t.Run("taken", func(t *testing.T) {
		id := NewID()
		a := SpawnAhead(id)
		ip, early := a.take()
		if ip == nil || early == nil || early.id != id {
			t.Fatalf("took %v, %+v", ip, early)
		}
		defer func() {
			ip.Kill()
			_, _ = ip.Wait()
			early.drop()
		}()
		inAll(t, early, ip.Pid())
		a.Discard()
		if err := unix.Kill(ip.Pid(), 0); err != nil {
			t.Errorf("Discard killed the init a monitor took: %v", err)
		}
		if ip2, _ := a.take(); ip2 != nil {
			t.Error("an init was taken twice")
		}
	})
}
