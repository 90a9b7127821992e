// Package detach splits `lamina run` into two processes before the Go
// runtime starts: the one its caller waits for, a stub of a few system
// calls, and a detached one that creates the container and then serves as
// its monitor.
//
// A container must outlive the CLI that ran it, so its monitor cannot be
// the CLI's process. It used to be a second lamina process, started by a
// constructor like this one, that waited while the CLI created the
// container: two Go runtimes starting side by side on every run (on the
// 2-CPU machine about 13 ms of CPU each), and a hand-over between them on
// the run's critical path. Now a C constructor, first thing in the
// process and while it is single-threaded, forks. The child is detached
// in a session of its own and goes on into the Go runtime: it is the CLI
// until the run is over, and the container's monitor throughout. The
// parent never starts Go: it waits for the child to say how to end (an
// exit code, or a signal to die of) and forwards the signals the CLI
// handles to it, so that the caller sees what it would have seen of a CLI
// that did everything itself.
//
// The constructor looks only at the command line's first words: `lamina
// run`, `lamina container run`, either after --root. Any other command,
// and `lamina run` when the fork fails, runs as a single process, and its
// monitor is spawned the usual way.
package detach

/*
#cgo CFLAGS: -Wall
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

// The child's end of the status pipe and the stub's pid, for Take; -1 in
// every process but the detached half of a run.
int lamina_detach_status = -1;
int lamina_detach_stub = -1;

// The timer slack of the process that ran lamina, when the detached half
// raised its own to LAMINA_RUN_SLACK; else -1.
long lamina_caller_slack = -1;

// The detached half's timer slack, in ns: see RunTimerSlack.
#define LAMINA_RUN_SLACK 500000L

// The signals the stub forwards: those the CLI proxies to a container
// (docker's sig-proxy) or dies of, and SIGWINCH for a terminal's size.
static const int lamina_forwarded[] = {SIGHUP, SIGINT, SIGQUIT, SIGTERM, SIGUSR1, SIGUSR2, SIGWINCH};
#define LAMINA_NFORWARDED (int)(sizeof(lamina_forwarded) / sizeof(lamina_forwarded[0]))

static int lamina_forwarded_n(void) { return LAMINA_NFORWARDED; }
static int lamina_forwarded_at(int i) { return lamina_forwarded[i]; }

static pid_t lamina_child = -1;

static void lamina_forward(int sig) {
	int saved = errno;
	kill(lamina_child, sig);
	errno = saved;
}

// lamina_stdio_open opens /dev/null on whichever of fds 0-2 is closed, as
// the Go runtime would a moment later (runtime.checkfds): else the status
// pipe would take one of those numbers and the CLI would write its output
// into it. It reports whether 0-2 are all open.
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

// lamina_is_run reports whether argv is a run: its first words `run` or
// `container run`, after an optional --root DIR or --root=DIR.
static int lamina_is_run(int argc, char **argv) {
	int i = 1;
	if (i < argc && strcmp(argv[i], "--root") == 0)
		i += 2;
	else if (i < argc && strncmp(argv[i], "--root=", 7) == 0)
		i++;
	if (i < argc && strcmp(argv[i], "container") == 0)
		i++;
	return i < argc && strcmp(argv[i], "run") == 0;
}

// lamina_die_of ends the stub as a process killed by sig, as the CLI
// would have ended.
static void lamina_die_of(int sig) {
	signal(sig, SIG_DFL);
	sigset_t set;
	sigemptyset(&set);
	sigaddset(&set, sig);
	sigprocmask(SIG_UNBLOCK, &set, NULL);
	kill(getpid(), sig);
	_exit(128 + sig); // a signal whose default is to be ignored
}

// lamina_stub is the parent's whole life: it waits for the child's word on
// the status pipe, two bytes, 'x' and an exit code or 's' and a signal.
// When the pipe closes without one, the child has ended: the stub ends as
// it did.
static void lamina_stub(int status, pid_t child) {
	unsigned char msg[2];
	ssize_t n;
	do
		n = read(status, msg, sizeof msg);
	while (n < 0 && errno == EINTR);
	if (n == 2 && msg[0] == 'x')
		_exit(msg[1]);
	if (n == 2 && msg[0] == 's')
		lamina_die_of(msg[1]);
	int st;
	while (waitpid(child, &st, 0) < 0)
		if (errno != EINTR)
			_exit(125);
	if (WIFSIGNALED(st))
		lamina_die_of(WTERMSIG(st));
	_exit(WIFEXITED(st) ? WEXITSTATUS(st) : 125);
}

// glibc passes argc and argv to ELF constructors (lamina is built against
// glibc; musl passes nothing).
__attribute__((constructor)) static void lamina_detach(int argc, char **argv) {
	if (argc < 2 || !argv || !lamina_is_run(argc, argv) || !lamina_stdio_open())
		return;
	int fds[2];
	if (pipe2(fds, O_CLOEXEC) < 0)
		return; // one process, and the monitor is spawned later
	// The forwarded signals are blocked until the stub's handlers are in
	// place: one sent meanwhile is forwarded, not taken by the stub.
	sigset_t set, old;
	sigemptyset(&set);
	for (int i = 0; i < LAMINA_NFORWARDED; i++)
		sigaddset(&set, lamina_forwarded[i]);
	sigprocmask(SIG_BLOCK, &set, &old);
	pid_t pid = fork();
	if (pid < 0) {
		close(fds[0]);
		close(fds[1]);
		sigprocmask(SIG_SETMASK, &old, NULL);
		return;
	}
	if (pid == 0) {
		// Detached in its own session, so that the container outlives
		// the caller. What the caller left open beyond stdio must not
		// reach the container's processes.
		close(fds[0]);
		setsid();
		// Before the Go runtime makes its threads, which inherit it. A
		// real-time caller's zero slack is left alone.
		long slack = prctl(PR_GET_TIMERSLACK, 0, 0, 0, 0);
		if (slack > 0 && slack < LAMINA_RUN_SLACK && prctl(PR_SET_TIMERSLACK, LAMINA_RUN_SLACK, 0, 0, 0) == 0)
			lamina_caller_slack = slack;
		syscall(SYS_close_range, 3, ~0U, CLOSE_RANGE_CLOEXEC);
		sigprocmask(SIG_SETMASK, &old, NULL);
		lamina_detach_status = fds[1];
		lamina_detach_stub = getppid();
		return;
	}
	close(fds[1]);
	lamina_child = pid;
	struct sigaction sa;
	memset(&sa, 0, sizeof sa);
	sa.sa_handler = lamina_forward;
	sa.sa_flags = SA_RESTART;
	for (int i = 0; i < LAMINA_NFORWARDED; i++)
		sigaction(lamina_forwarded[i], &sa, NULL);
	sigprocmask(SIG_SETMASK, &old, NULL);
	lamina_stub(fds[0], pid);
}
*/
import "C"

import (
	"os"
	"sync"
	"syscall"
	"time"
)

// Forwarded returns the signals the stub passes on to the detached
// process, in which the CLI must handle them or act out their default
// action with Stub.Die: a Go process that does not handle them dies of
// them, and this one may be a container's monitor. (lamina_forwarded in
// the constructor is the same list.)
func Forwarded() []os.Signal {
	return []os.Signal{syscall.SIGHUP, syscall.SIGINT, syscall.SIGQUIT, syscall.SIGTERM,
		syscall.SIGUSR1, syscall.SIGUSR2, syscall.SIGWINCH}
}

// stubForwards is the stub's own list of the signals it forwards, which
// must be Forwarded's.
func stubForwards() []os.Signal {
	var sigs []os.Signal
	for i := 0; i < int(C.lamina_forwarded_n()); i++ {
		sigs = append(sigs, syscall.Signal(C.lamina_forwarded_at(C.int(i))))
	}
	return sigs
}

// RunTimerSlack is the timer slack, 500 us, that the detached half of a
// run gives its threads from the start (the constructor sets it before the
// Go runtime makes them), when its caller's is less. The Go scheduler's
// monitor thread (sysmon) wakes every 20 us while goroutines make system
// calls, which a run does for its whole life: 116 wake-ups and their
// context switches in a `lamina run --rm IMG true` with Linux's default
// 50 us slack, each taking a CPU from the run's work on a 2-CPU machine.
// With 500 us the run took 3 ms less CPU (33.9 -> 30.9) and 2 ms less
// time (22.5 -> 20.3 ms), 100 interleaved rounds. Timers in this process
// fire up to 500 us late, which none of its waits notices. The container
// gets the caller's slack back (CallerTimerSlack, passed to init; its
// "default" slack, what prctl(PR_SET_TIMERSLACK, 0) goes back to, stays
// the one it inherited, 500 us). A FUSE server of another storage driver
// that a run starts (fuse-overlayfs, unionfs-fuse) keeps the raised one,
// which its request loop, with no timers, does not notice either.
const RunTimerSlack = time.Duration(C.LAMINA_RUN_SLACK)

// CallerTimerSlack returns the timer slack of the process that ran
// lamina, when this process raised its own (RunTimerSlack): the slack a
// container's command must be given back, since children inherit the
// slack of the thread that forks them.
func CallerTimerSlack() (time.Duration, bool) {
	if C.lamina_caller_slack < 0 {
		return 0, false
	}
	return time.Duration(C.lamina_caller_slack), true
}

// Stub is the process the caller of `lamina run` waits for, as the
// detached process sees it.
type Stub struct {
	Pid    int
	status *os.File
	mu     sync.Mutex // guards status's single word
	said   bool
}

// take guards the constructor's status pipe, which belongs to the
// process: only one caller may own it.
var take sync.Once

// Take returns the stub when this process is the detached half of a run,
// once; later calls, and every other process, get false.
func Take() (*Stub, bool) {
	var s *Stub
	take.Do(func() {
		if C.lamina_detach_status >= 0 {
			s = &Stub{Pid: int(C.lamina_detach_stub), status: os.NewFile(uintptr(C.lamina_detach_status), "detach-status")}
		}
	})
	return s, s != nil
}

// Exit makes the stub exit with code. Only the first of Exit and Die
// counts.
func (s *Stub) Exit(code int) { s.say('x', byte(code)) }

// Die makes the stub die of sig, the way a process that does not handle
// it does.
func (s *Stub) Die(sig syscall.Signal) { s.say('s', byte(sig)) }

// Said reports whether Exit or Die was called.
func (s *Stub) Said() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.said
}

func (s *Stub) say(kind, arg byte) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.said {
		return
	}
	s.said = true
	// The stub may be gone already (killed): nobody is left to tell.
	_, _ = s.status.Write([]byte{kind, arg})
	s.status.Close()
}
