// Package prespawn starts a container monitor for `lamina run` before the
// Go runtime does.
//
// A monitor is the lamina binary re-executed (runtime/start.go). Its
// process start (exec, the Go runtime, package initialisation) is the
// larger part of its cost, and until now it began only once the CLI's own
// start was over: two process starts in series on the path of every
// `lamina run`. A C constructor runs first thing in the CLI's process,
// while it is still single-threaded and small: when the command line is
// `lamina run ...` it forks and execs the monitor at once, so that the two
// starts overlap. The monitor then waits, as one spawned later would, for
// the container to be created (runtime.Store.Prepare takes it over).
//
// Only the first argument is looked at: `lamina run` with global flags
// before "run", or any other command, spawns its monitor the usual way.
// A prespawned monitor that is never used reads EOF and exits.
package prespawn

/*
#cgo CFLAGS: -Wall
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/types.h>
#include <unistd.h>

extern char **environ;

// The monitor and the CLI's ends of its pipes, for Take; -1 when no
// monitor was started.
int lamina_prespawn_pid = -1;
int lamina_prespawn_report = -1, lamina_prespawn_id = -1, lamina_prespawn_attach = -1;

static void lamina_close(int *fds, int n) {
	for (int i = 0; i < n; i++)
		if (fds[i] >= 0)
			close(fds[i]);
}

// lamina_stdio_open opens /dev/null on whichever of fds 0-2 is closed, as
// the Go runtime would a moment later (runtime.checkfds): else the pipes
// below would take those numbers and the CLI would read its monitor's
// report as its stdin. It reports whether 0-2 are all open.
static int lamina_stdio_open(void) {
	for (int i = 0; i < 3; i++) {
		if (fcntl(i, F_GETFD) >= 0 || errno != EBADF)
			continue;
		int fd = open("/dev/null", O_RDWR);
		if (fd != i) {
			if (fd >= 0)
				close(fd);
			return 0;
		}
	}
	return 1;
}

// glibc passes argc and argv to ELF constructors (lamina is built against
// glibc; musl passes nothing).
__attribute__((constructor)) static void lamina_prespawn(int argc, char **argv) {
	if (argc < 2 || !argv || strcmp(argv[1], "run") != 0 || !lamina_stdio_open())
		return;
	// The layout runtime.Store.Prepare gives a monitor: fd 3 the report
	// pipe's write end, fd 4 the ID pipe's read end, fd 5 the monitor's
	// end of the attach socketpair. fds[0..5] are the pipes' and the
	// socketpair's ends, fds[6..8] copies above 5 of the child's ends.
	int fds[9] = {-1, -1, -1, -1, -1, -1, -1, -1, -1};
	if (pipe2(fds, O_CLOEXEC) < 0 || pipe2(fds + 2, O_CLOEXEC) < 0 ||
	    socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, fds + 4) < 0) {
		lamina_close(fds, 9);
		return; // the CLI spawns its monitor later, and reports any error
	}
	// The child's ends move above 5 first, or one dup2 below could
	// overwrite another's source.
	int child[3] = {fds[1], fds[2], fds[5]};
	for (int i = 0; i < 3; i++) {
		if ((fds[6 + i] = fcntl(child[i], F_DUPFD_CLOEXEC, 6)) < 0) {
			lamina_close(fds, 9);
			return;
		}
	}
	// vfork: the parent waits only until the exec, and neither copies the
	// other's page tables. The child makes system calls only.
	pid_t pid = vfork();
	if (pid < 0) {
		lamina_close(fds, 9);
		return;
	}
	if (pid == 0) {
		// Detached in its own session, so that the container outlives
		// the CLI, and in /, so that it holds no filesystem busy; stdio
		// is /dev/null until the monitor has its log. Nothing the CLI
		// inherited beyond its stdio reaches the monitor.
		setsid();
		int null = open("/dev/null", O_RDWR | O_CLOEXEC);
		if (null < 0 || dup2(null, 0) < 0 || dup2(null, 1) < 0 || dup2(null, 2) < 0 ||
		    dup2(fds[6], 3) < 0 || dup2(fds[7], 4) < 0 || dup2(fds[8], 5) < 0 || chdir("/") < 0)
			_exit(125);
		syscall(SYS_close_range, 6, ~0U, 0);
		char *args[] = {argv[0], "__monitor", NULL};
		execve("/proc/self/exe", args, environ);
		_exit(125);
	}
	lamina_close(child, 3);
	lamina_close(fds + 6, 3);
	lamina_prespawn_pid = pid;
	lamina_prespawn_report = fds[0];
	lamina_prespawn_id = fds[3];
	lamina_prespawn_attach = fds[4];
}
*/
import "C"

import (
	"os"
	"sync"
)

// Monitor is a prespawned monitor: its pid and the CLI's ends of its
// report pipe, ID pipe and attach socketpair.
type Monitor struct {
	Pid                int
	Report, ID, Attach *os.File
}

// take guards the constructor's fds, which belong to the process: only
// one caller may own them.
var take sync.Once

// Take returns the monitor the constructor started, once; later calls,
// and processes that started none, get false.
func Take() (Monitor, bool) {
	var m Monitor
	ok := false
	take.Do(func() {
		if C.lamina_prespawn_pid < 0 {
			return
		}
		m = Monitor{
			Pid:    int(C.lamina_prespawn_pid),
			Report: os.NewFile(uintptr(C.lamina_prespawn_report), "monitor-report"),
			ID:     os.NewFile(uintptr(C.lamina_prespawn_id), "monitor-id"),
			Attach: os.NewFile(uintptr(C.lamina_prespawn_attach), "monitor-attach"),
		}
		ok = true
	})
	return m, ok
}
