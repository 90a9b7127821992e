package runtime

import (
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/lamina-project/lamina/internal/testutil"
)

// TestWaitsInPoller checks that the monitor waits for its container's
// exit in the runtime's poller, not in waitid(2) on a thread of its own,
// which would keep the Go scheduler's sysmon waking every 20 us for as
// long as the container runs.
func TestWaitsInPoller(t *testing.T) {
	testutil.RequirePrivileged(t)
	spec, err := NewSpec("0123456789abcdef", sharedRootfs(t), Options{Args: []string{"sleep", "1"}, Network: "none"})
	if err != nil {
		t.Fatal(err)
	}
	p, err := startQuiet(t, spec, goInit)
	if err != nil {
		t.Fatal(err)
	}
	if err := p.Start(); err != nil {
		p.Kill()
		_, _ = p.Wait()
		t.Fatal(err)
	}
	done := make(chan int, 1)
	go func() { code, _ := p.Wait(); done <- code }()
	time.Sleep(300 * time.Millisecond)
	var in []string
	tasks, _ := os.ReadDir("/proc/self/task")
	for _, task := range tasks {
		b, err := os.ReadFile(filepath.Join("/proc/self/task", task.Name(), "syscall"))
		if f := strings.Fields(string(b)); err == nil && len(f) > 0 && (f[0] == strconv.Itoa(syscall.SYS_WAITID) || f[0] == strconv.Itoa(syscall.SYS_WAIT4)) {
			in = append(in, "thread "+task.Name()+": "+strings.TrimSpace(string(b)))
		}
	}
	if code := <-done; code != 0 {
		t.Fatalf("sleep exited %d", code)
	}
	if len(in) > 0 {
		t.Fatalf("threads blocked waiting for the container's exit:\n%s", strings.Join(in, "\n"))
	}
}

// TestKillAfterWait: an init killed and reaped answers a second Wait with
// the same exit code, and a Kill after its reap signals nothing (its pid
// may be another process's by then): Kill goes through init's pidfd,
// which the reap closes.
func TestKillAfterWait(t *testing.T) {
	testutil.RequirePrivileged(t)
	p, err := spawnInitAhead(goInit.open)
	if err != nil {
		t.Fatal(err)
	}
	if p.pidfd < 0 {
		t.Error("spawned without a pidfd")
	}
	p.Kill()
	code, err := p.Wait()
	if err != nil || code != 137 {
		t.Fatalf("killed init: exit %d, %v; want 137", code, err)
	}
	if p.pidfd != -1 {
		t.Errorf("pidfd %d still open after the reap", p.pidfd)
	}
	p.Kill() // must not panic nor signal
	if code, err := p.Wait(); err != nil || code != 137 {
		t.Fatalf("second Wait: exit %d, %v; want 137", code, err)
	}
}
