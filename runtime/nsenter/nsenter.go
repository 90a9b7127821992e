// Package nsenter joins a running container's namespaces before the Go
// runtime starts. setns into a mount namespace needs a single-threaded
// process, which a Go program never is once its runtime runs; so, as runc's
// nsexec does, a C constructor does it first thing, when the environment
// asks for it, and forks so that the child is inside the container's PID
// namespace too. The child then continues into Go (lamina's exec helper);
// the parent waits for it and exits with its status.
//
// Import it for its side effect from the lamina command:
//
//	import _ "github.com/lamina-project/lamina/runtime/nsenter"
package nsenter

/*
#cgo CFLAGS: -Wall
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

static pid_t lamina_child;

static void lamina_forward(int sig) {
	if (lamina_child > 0)
		kill(lamina_child, sig);
}

static void lamina_die(const char *what) {
	fprintf(stderr, "lamina: exec: %s: %s\n", what, strerror(errno));
	_exit(125);
}

// lamina_join_cgroups writes 0 (this process) into each cgroup.procs file
// of the colon-separated list, while the host's /sys is still visible.
static void lamina_join_cgroups(const char *list) {
	char *copy = strdup(list), *save = NULL, *p;
	if (!copy)
		lamina_die("strdup");
	for (p = strtok_r(copy, ":", &save); p; p = strtok_r(NULL, ":", &save)) {
		int fd = open(p, O_WRONLY | O_CLOEXEC);
		if (fd < 0)
			lamina_die(p);
		if (write(fd, "0", 1) != 1)
			lamina_die(p);
		close(fd);
	}
	free(copy);
}

__attribute__((constructor)) static void lamina_nsenter(void) {
	const char *pid = getenv("_LAMINA_NSENTER_PID");
	if (!pid || !*pid)
		return;
	// Not dumpable: processes in the container must not read this one's
	// /proc entries (its memory, fds, exe) while it still holds host
	// privileges; execve resets it for the command.
	if (prctl(PR_SET_DUMPABLE, 0, 0, 0, 0) < 0)
		lamina_die("prctl(PR_SET_DUMPABLE)");
	const char *cgroups = getenv("_LAMINA_NSENTER_CGROUPS");
	if (cgroups && *cgroups)
		lamina_join_cgroups(cgroups);

	// Open every namespace first: after joining the mount namespace the
	// host's /proc/<pid> is out of reach. The mount namespace goes last.
	static const char *types[] = {"cgroup", "ipc", "uts", "net", "pid", "mnt"};
	int n = sizeof(types) / sizeof(types[0]);
	int fds[6];
	char path[64];
	for (int i = 0; i < n; i++) {
		snprintf(path, sizeof(path), "/proc/%s/ns/%s", pid, types[i]);
		fds[i] = open(path, O_RDONLY | O_CLOEXEC);
		if (fds[i] < 0)
			lamina_die(path);
	}
	for (int i = 0; i < n; i++) {
		if (setns(fds[i], 0) < 0)
			lamina_die(types[i]);
		close(fds[i]);
	}
	pid_t child = fork();
	if (child < 0)
		lamina_die("fork");
	if (child == 0) {
		prctl(PR_SET_PDEATHSIG, SIGKILL);
		unsetenv("_LAMINA_NSENTER_PID");
		unsetenv("_LAMINA_NSENTER_CGROUPS");
		return; // into the Go runtime, inside the container
	}
	lamina_child = child;
	int sigs[] = {SIGHUP, SIGINT, SIGQUIT, SIGTERM, SIGUSR1, SIGUSR2, SIGWINCH, SIGCONT};
	for (unsigned i = 0; i < sizeof(sigs) / sizeof(sigs[0]); i++)
		signal(sigs[i], lamina_forward);
	int status;
	while (waitpid(child, &status, 0) < 0) {
		if (errno != EINTR)
			lamina_die("waitpid");
	}
	if (WIFSIGNALED(status))
		_exit(128 + WTERMSIG(status));
	_exit(WEXITSTATUS(status));
}
*/
import "C"
