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
#include <fcntl.h>
#include <string.h>
#include <sys/socket.h>
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

// glibc passes argc and argv to ELF constructors.
__attribute__((constructor)) static void lamina_prespawn(int argc, char **argv) {
	if (argc < 2 || !argv || strcmp(argv[1], "run") != 0)
		return;
	// The layout runtime.Store.Prepare gives a monitor: fd 3 the report
	// pipe's write end, fd 4 the ID pipe's read end, fd 5 the monitor's
	// end of the attach socketpair.
	int report[2] = {-1, -1}, id[2] = {-1, -1}, attach[2] = {-1, -1};
	if (pipe2(report, O_CLOEXEC) < 0 || pipe2(id, O_CLOEXEC) < 0 ||
	    socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, attach) < 0) {
		lamina_close(report, 2), lamina_close(id, 2), lamina_close(attach, 2);
		return; // the CLI spawns its monitor later, and reports any error
	}
	// Every fd the child keeps must be above 5 before the dup2s, or one
	// dup2 would overwrite another's source.
	int orig[3] = {report[1], id[0], attach[1]}, keep[3] = {report[1], id[0], attach[1]};
	for (int i = 0; i < 3; i++) {
		if (keep[i] <= 5) {
			int fd = fcntl(keep[i], F_DUPFD_CLOEXEC, 6);
			if (fd < 0) {
				lamina_close(report, 2), lamina_close(id, 2), lamina_close(attach, 2);
				return;
			}
			keep[i] = fd;
		}
	}
	// vfork: the parent waits only until the exec, and neither copies the
	// other's page tables. The child makes system calls only.
	pid_t pid = vfork();
	if (pid < 0) {
		lamina_close(report, 2), lamina_close(id, 2), lamina_close(attach, 2);
		return;
	}
	if (pid == 0) {
		// Detached in its own session, so that the container outlives
		// the CLI; stdio is /dev/null until the monitor has its log.
		setsid();
		int null = open("/dev/null", O_RDWR | O_CLOEXEC);
		if (null < 0 || dup2(null, 0) < 0 || dup2(null, 1) < 0 || dup2(null, 2) < 0 ||
		    dup2(keep[0], 3) < 0 || dup2(keep[1], 4) < 0 || dup2(keep[2], 5) < 0)
			_exit(125);
		char *args[] = {argv[0], "__monitor", NULL};
		execve("/proc/self/exe", args, environ);
		_exit(125);
	}
	for (int i = 0; i < 3; i++) {
		if (keep[i] != orig[i])
			close(keep[i]);
		close(orig[i]);
	}
	lamina_prespawn_pid = pid;
	lamina_prespawn_report = report[0];
	lamina_prespawn_id = id[1];
	lamina_prespawn_attach = attach[0];
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
