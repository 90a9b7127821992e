// Test of lamina's fifth change to go-fuse: the server waits for requests
// in the runtime's poller, not in read(2) on a thread of its own.

package fs

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// fuseFDs lists this process's descriptors of /dev/fuse.
func fuseFDs(t *testing.T) map[uint64]bool {
	t.Helper()
	entries, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	fds := map[uint64]bool{}
	for _, e := range entries {
		if target, _ := os.Readlink("/proc/self/fd/" + e.Name()); target == "/dev/fuse" {
			n, _ := strconv.ParseUint(e.Name(), 10, 64)
			fds[n] = true
		}
	}
	return fds
}

// threadsInFuseRead lists the threads of this process that are in read(2)
// on one of fds.
func threadsInFuseRead(t *testing.T, fds map[uint64]bool) []string {
	t.Helper()
	tasks, err := os.ReadDir("/proc/self/task")
	if err != nil {
		t.Fatal(err)
	}
	var in []string
	for _, task := range tasks {
		b, err := os.ReadFile(filepath.Join("/proc/self/task", task.Name(), "syscall"))
		if err != nil {
			continue // the thread is gone
		}
		f := strings.Fields(string(b))
		if len(f) < 2 || f[0] != strconv.Itoa(syscall.SYS_READ) {
			continue
		}
		if fd, err := strconv.ParseUint(strings.TrimPrefix(f[1], "0x"), 16, 64); err == nil && fds[fd] {
			in = append(in, fmt.Sprintf("thread %s: %s", task.Name(), strings.TrimSpace(string(b))))
		}
	}
	return in
}

// TestReaderWaitsInPoller checks that an idle server has no thread blocked
// in read(2) on /dev/fuse: its reader waits in the poller, so that it does
// not hold a thread and a P in a system call (which keeps the scheduler's
// sysmon waking every 20 us), and it still answers.
func TestReaderWaitsInPoller(t *testing.T) {
	r := &blockRoot{entered: make(chan struct{}), release: make(chan struct{})}
	dir := mountBlockRoot(t, r)
	fds := fuseFDs(t)
	if len(fds) == 0 {
		t.Fatal("no /dev/fuse descriptor in this process")
	}
	for i := 0; i < 20; i++ {
		if _, err := os.Lstat(filepath.Join(dir, "fast")); err != nil {
			t.Fatal(err)
		}
		// Idle now: the reader is back waiting for the next request.
		time.Sleep(10 * time.Millisecond)
		if in := threadsInFuseRead(t, fds); len(in) > 0 {
			t.Fatalf("threads blocked in read(2) on /dev/fuse while idle:\n%s", strings.Join(in, "\n"))
		}
	}
}
