// Package initproc is the container side of the runtime: what runs in a
// container's new namespaces before its command (the root filesystem,
// pivot_root, masks, the user, capabilities, seccomp, execve), for the
// container's init and for lamina exec's helper, and the messages it
// exchanges with the monitor (sync.go).
//
// It is a package of its own, without cgo and without lamina's other
// packages. The container's init an installed lamina runs is
// cmd/lamina-init, a C program that does what Init does from the flat
// bootstrap (flat.go); Init is the init of a lamina without it (the
// lamina binary runs itself as init), and TestInitsAgree holds the two to
// the same result. A change to one is a change to the other.
package initproc

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	goruntime "runtime"
	"strconv"
	"strings"

	"github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"
)

// UserAnnotation carries the -u value in the spec, resolved against the
// image's /etc/passwd and /etc/group here once the root filesystem is in
// place (the spec itself only has numbers).
const UserAnnotation = "org.lamina.user"

// SeccompDefaultAnnotation marks a spec whose seccomp profile is docker's
// default, which allows every system call an init makes from loading the
// filter to the command's execve: the C init then loads it, and drops the
// bounding set, on a thread of its own while it builds the root
// filesystem (see EncodeFlat).
const SeccompDefaultAnnotation = "org.lamina.seccomp-default"

// DefaultPath is docker's PATH when the image sets none.
const DefaultPath = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

// SearchPath is the PATH a command is looked up along: the last PATH= of
// env, else DefaultPath.
func SearchPath(env []string) string {
	p := DefaultPath
	for _, e := range env {
		if v, ok := strings.CutPrefix(e, "PATH="); ok {
			p = v
		}
	}
	return p
}

// InitCommand is the hidden argument that makes the lamina binary run as a
// container's init (`lamina __init`).
const InitCommand = "__init"

// timerSlackArg returns the timer slack that init's arguments (after
// InitCommand) ask for; not ok for none, or for 0, which prctl would take
// for "the default", the monitor's raised slack.
func timerSlackArg(args []string) (uint64, bool) {
	for i, a := range args {
		if i < 2 {
			continue
		}
		if ns, ok := strings.CutPrefix(a, TimerSlackFlag); ok {
			v, err := strconv.ParseUint(ns, 10, 64)
			return v, err == nil && v > 0
		}
	}
	return 0, false
}

// TimerSlackFlag, followed by nanoseconds, is the argument after
// InitCommand that gives init and the command the timer slack of
// lamina's caller (see runtime/detach.RunTimerSlack).
const TimerSlackFlag = "--timer-slack="

// Exit codes docker uses when the container's command cannot run.
const (
	ExitCannotExecute = 126
	ExitNotFound      = 127
)

// Init is the container side: it runs in the new namespaces as pid 1,
// builds the root filesystem, waits for the monitor's start, becomes the
// user with the spec's privileges, and execs the command. It only returns
// on failure, after telling the monitor why.
//
// Preconditions: fd 3 is the sync socket; fds 0-2 are the container's
// stdio (or the pty is made here when the spec asks for a terminal).
func Init() error {
	// Capabilities, no_new_privs, seccomp and the cgroup namespace are per
	// thread: everything from here to execve runs on this one.
	goruntime.LockOSThread()
	if ns, ok := timerSlackArg(os.Args); ok {
		_ = unix.Prctl(unix.PR_SET_TIMERSLACK, uintptr(ns), 0, 0, 0)
	}
	// Docker's umask, whatever the monitor's (a FUSE server runs with 0).
	unix.Umask(0o022)
	sock := os.NewFile(3, "sync")
	// Spawned ahead of its container, init has time on its hands.
	warmDecoder()
	msg, stdio, err := RecvSync(sock)
	if err != nil {
		return fmt.Errorf("init: %w", err)
	}
	if msg.Type != "bootstrap" || msg.Spec == nil {
		CloseFiles(stdio)
		return fmt.Errorf("init: expected bootstrap, got %q", msg.Type)
	}
	if msg.Protocol != Protocol {
		CloseFiles(stdio)
		err := fmt.Errorf("init: lamina speaks protocol %d and this init %d: install lamina and lamina-init from one build", msg.Protocol, Protocol)
		_ = SendSync(sock, SyncMsg{Type: "error", Error: err.Error(), Code: 125})
		return err
	}
	// An init spawned ahead of its container gets its stdio now.
	if err := takeStdio(stdio); err != nil {
		return fmt.Errorf("init: %w", err)
	}
	spec := msg.Spec
	fail := failer(sock)
	if err := setupContainer(spec, sock); err != nil {
		return fail(125, err)
	}
	user, path, err := prepareProcess(spec.Process, spec.Annotations[UserAnnotation], msg.UserDB)
	if err != nil {
		var ee *ExecError
		if errors.As(err, &ee) {
			return fail(ee.Code, err)
		}
		return fail(125, err)
	}
	if err := SendSync(sock, SyncMsg{Type: "ready"}); err != nil {
		os.Exit(125)
	}
	m, _, err := RecvSync(sock)
	if err != nil || m.Type != "start" {
		// The monitor gave up on us (container removed before start).
		os.Exit(125)
	}
	code, err := execProcess(spec.Process, user, path, msg.Filter, true)
	return fail(code, err)
}

// takeStdio makes files, when there are any, fds 0-2.
func takeStdio(files []*os.File) error {
	defer CloseFiles(files)
	if len(files) == 0 {
		return nil
	}
	if len(files) != 3 {
		return fmt.Errorf("bootstrap came with %d descriptors, not stdio's 3", len(files))
	}
	for i, f := range files {
		if err := unix.Dup3(int(f.Fd()), i, 0); err != nil {
			return fmt.Errorf("stdio: %w", err)
		}
	}
	return nil
}

// failer returns the way out of a failed setup: tell the other end of
// sock why, and exit with code (docker's 125, 126 or 127).
func failer(sock *os.File) func(code int, err error) error {
	return func(code int, err error) error {
		_ = SendSync(sock, SyncMsg{Type: "error", Error: err.Error(), Code: code})
		os.Exit(code)
		return err
	}
}

func hasNamespace(spec *specs.Spec, t specs.LinuxNamespaceType) bool {
	if spec.Linux == nil {
		return false
	}
	for _, ns := range spec.Linux.Namespaces {
		if ns.Type == t && ns.Path == "" {
			return true
		}
	}
	return false
}

// setupContainer builds the container around the process: mount and cgroup
// namespaces (now that the monitor has mounted the root filesystem and put
// us in our cgroups), loopback, root
// filesystem, console, masks, hostname, rlimits.
//
// The mount namespace is unshared here, not at clone (see spawnInit), by
// this thread: it gets its own copy of the filesystem context, and every
// path this process resolves from here to execve is resolved on it. The
// process's other threads (the Go runtime's) stay in the monitor's mount
// namespace, and die at execve.
func setupContainer(spec *specs.Spec, sock *os.File) error {
	var flags int
	if hasNamespace(spec, specs.MountNamespace) {
		flags |= unix.CLONE_NEWNS
	}
	if hasNamespace(spec, specs.CgroupNamespace) {
		flags |= unix.CLONE_NEWCGROUP
	}
	if flags != 0 {
		if err := unix.Unshare(flags); err != nil {
			return fmt.Errorf("unshare mount and cgroup namespaces: %w", err)
		}
	}
	if hasNamespace(spec, specs.NetworkNamespace) {
		if err := loopbackUp(); err != nil {
			return err
		}
	}
	if err := prepareRootfs(spec); err != nil {
		return err
	}
	if spec.Process.Terminal {
		if err := setupConsole(sock, true); err != nil {
			return err
		}
	}
	if err := finalizeRootfs(spec); err != nil {
		return err
	}
	if hasNamespace(spec, specs.UTSNamespace) && spec.Hostname != "" {
		if err := unix.Sethostname([]byte(spec.Hostname)); err != nil {
			return fmt.Errorf("sethostname: %w", err)
		}
	}
	return setRlimits(spec.Process.Rlimits)
}

// loopbackUp brings lo up in a new network namespace (--network none).
func loopbackUp() error {
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("loopback: %w", err)
	}
	defer unix.Close(fd)
	ifr, err := unix.NewIfreq("lo")
	if err != nil {
		return fmt.Errorf("loopback: %w", err)
	}
	if err := unix.IoctlIfreq(fd, unix.SIOCGIFFLAGS, ifr); err != nil {
		return fmt.Errorf("loopback flags: %w", err)
	}
	ifr.SetUint16(ifr.Uint16() | unix.IFF_UP)
	if err := unix.IoctlIfreq(fd, unix.SIOCSIFFLAGS, ifr); err != nil {
		return fmt.Errorf("loopback up: %w", err)
	}
	return nil
}

// setupConsole makes a pty in the container's own devpts (so that the
// process sees a /dev/pts name it can open), binds its slave onto
// /dev/console when asked, makes it the controlling terminal and stdio, and
// hands the master to the other end of sock (the monitor, or exec's CLI).
func setupConsole(sock *os.File, bindConsole bool) error {
	master, err := unix.Open("/dev/pts/ptmx", unix.O_RDWR|unix.O_NOCTTY|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("open ptmx: %w", err)
	}
	defer unix.Close(master)
	if err := unix.IoctlSetPointerInt(master, unix.TIOCSPTLCK, 0); err != nil {
		return fmt.Errorf("unlock pty: %w", err)
	}
	n, err := unix.IoctlGetUint32(master, unix.TIOCGPTN)
	if err != nil {
		return fmt.Errorf("pty number: %w", err)
	}
	slavePath := "/dev/pts/" + strconv.Itoa(int(n))
	slave, err := unix.Open(slavePath, unix.O_RDWR|unix.O_NOCTTY, 0)
	if err != nil {
		return fmt.Errorf("open pty slave: %w", err)
	}
	if bindConsole {
		if err := unix.Mount(slavePath, "/dev/console", "", unix.MS_BIND, ""); err != nil {
			return fmt.Errorf("bind /dev/console: %w", err)
		}
	}
	if err := SendSync(sock, SyncMsg{Type: "pty"}, master); err != nil {
		return err
	}
	if _, err := unix.Setsid(); err != nil && !errors.Is(err, unix.EPERM) {
		return fmt.Errorf("setsid: %w", err)
	}
	if err := unix.IoctlSetInt(slave, unix.TIOCSCTTY, 0); err != nil {
		return fmt.Errorf("set controlling terminal: %w", err)
	}
	for i := 0; i < 3; i++ {
		if err := unix.Dup3(slave, i, 0); err != nil {
			return fmt.Errorf("pty stdio: %w", err)
		}
	}
	if slave > 2 {
		unix.Close(slave)
	}
	return nil
}

var rlimitTypes = map[string]int{
	"RLIMIT_AS": unix.RLIMIT_AS, "RLIMIT_CORE": unix.RLIMIT_CORE, "RLIMIT_CPU": unix.RLIMIT_CPU,
	"RLIMIT_DATA": unix.RLIMIT_DATA, "RLIMIT_FSIZE": unix.RLIMIT_FSIZE, "RLIMIT_LOCKS": unix.RLIMIT_LOCKS,
	"RLIMIT_MEMLOCK": unix.RLIMIT_MEMLOCK, "RLIMIT_MSGQUEUE": unix.RLIMIT_MSGQUEUE, "RLIMIT_NICE": unix.RLIMIT_NICE,
	"RLIMIT_NOFILE": unix.RLIMIT_NOFILE, "RLIMIT_NPROC": unix.RLIMIT_NPROC, "RLIMIT_RSS": unix.RLIMIT_RSS,
	"RLIMIT_RTPRIO": unix.RLIMIT_RTPRIO, "RLIMIT_RTTIME": unix.RLIMIT_RTTIME, "RLIMIT_SIGPENDING": unix.RLIMIT_SIGPENDING,
	"RLIMIT_STACK": unix.RLIMIT_STACK,
}

// KnownRlimit reports whether init can set the rlimit named t
// ("RLIMIT_NOFILE").
func KnownRlimit(t string) bool {
	_, ok := rlimitTypes[t]
	return ok
}

func setRlimits(rls []specs.POSIXRlimit) error {
	for _, rl := range rls {
		t, ok := rlimitTypes[rl.Type]
		if !ok {
			return fmt.Errorf("unknown rlimit %s", rl.Type)
		}
		if err := unix.Setrlimit(t, &unix.Rlimit{Cur: rl.Soft, Max: rl.Hard}); err != nil {
			return fmt.Errorf("setrlimit %s %d:%d: %w", rl.Type, rl.Soft, rl.Hard, err)
		}
	}
	return nil
}

// ExecError is a command that could not run, with docker's exit code for
// it (126 cannot execute, 127 not found).
type ExecError struct {
	Code int
	Msg  string
}

func (e *ExecError) Error() string { return e.Msg }

// prepareProcess resolves the user and the command inside the container,
// before the monitor is told the container is ready, so that "not found"
// is reported before anything runs.
func prepareProcess(p *specs.Process, userSpec string, db *UserDB) (execUser, string, error) {
	var u execUser
	var err error
	if db != nil {
		u, err = lookupUserIn(userSpec, db)
	} else {
		u, err = lookupUser(userSpec, "/etc/passwd", "/etc/group")
	}
	if err != nil {
		return u, "", err
	}
	if len(p.Args) == 0 {
		return u, "", &ExecError{Code: ExitNotFound, Msg: "no command specified"}
	}
	path, err := lookPath(p.Args[0], p.Env)
	return u, path, err
}

// lookPath finds argv0 in the container's PATH (we are already inside its
// root, so plain paths are container paths).
func lookPath(argv0 string, env []string) (string, error) {
	if strings.Contains(argv0, "/") {
		if _, err := os.Stat(argv0); err != nil {
			return "", &ExecError{Code: ExitNotFound, Msg: fmt.Sprintf("exec: %q: stat %s: no such file or directory", argv0, argv0)}
		}
		return argv0, nil
	}
	var denied string
	for _, dir := range filepath.SplitList(SearchPath(env)) {
		if dir == "" {
			dir = "."
		}
		p := filepath.Join(dir, argv0)
		fi, err := os.Stat(p)
		if err != nil || fi.IsDir() {
			continue
		}
		if fi.Mode()&0o111 == 0 {
			if denied == "" {
				denied = p
			}
			continue
		}
		return p, nil
	}
	if denied != "" {
		return denied, nil // execve reports the permission error: 126
	}
	return "", &ExecError{Code: ExitNotFound, Msg: fmt.Sprintf("exec: %q: executable file not found in $PATH", argv0)}
}

// execProcess drops to the process's user and privileges and execs it. It
// returns only on failure, with the exit code to use.
//
// The order is runc's: no_new_privs; seccomp early (while CAP_SYS_ADMIN is
// still held) unless no_new_privs lets it load late; bounding set; keep
// capabilities across setuid; groups, gid, uid; the final capability sets;
// close every fd but stdio; execve. filter is the compiled seccomp program
// (nil: none).
//
// createCwd makes a missing working directory, as docker does for a
// container (not for an exec).
func execProcess(p *specs.Process, u execUser, path string, filter []byte, createCwd bool) (int, error) {
	env := p.Env
	hasHome := false
	for _, e := range env {
		if strings.HasPrefix(e, "HOME=") {
			hasHome = true
		}
	}
	if !hasHome {
		env = append(env, "HOME="+u.Home)
	}
	cwd := p.Cwd
	if cwd == "" {
		cwd = "/"
	}
	if createCwd {
		if err := os.MkdirAll(cwd, 0o755); err != nil {
			return 125, fmt.Errorf("working directory %s: %w", cwd, err)
		}
	}
	if err := unix.Chdir(cwd); err != nil {
		return ExitCannotExecute, fmt.Errorf("chdir to cwd (%q) set in config.json failed: %w", cwd, err)
	}
	// CVE-2024-21626: a leaked host directory fd as cwd would make getcwd
	// fail or point outside the root; refuse to run in that case.
	if wd, err := unix.Getwd(); err != nil || !strings.HasPrefix(wd, "/") {
		return 125, fmt.Errorf("current working directory is outside of the container: %v", err)
	}
	if p.NoNewPrivileges {
		if err := unix.Prctl(unix.PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0); err != nil {
			return 125, fmt.Errorf("no_new_privs: %w", err)
		}
	} else if err := loadSeccomp(filter); err != nil {
		return 125, err
	}
	caps, err := newCapState(p.Capabilities)
	if err != nil {
		return 125, err
	}
	if err := caps.applyBounding(); err != nil {
		return 125, err
	}
	if err := unix.Prctl(unix.PR_SET_KEEPCAPS, 1, 0, 0, 0); err != nil {
		return 125, fmt.Errorf("keepcaps: %w", err)
	}
	if err := setUser(u); err != nil {
		return 125, err
	}
	if err := unix.Prctl(unix.PR_SET_KEEPCAPS, 0, 0, 0, 0); err != nil {
		return 125, fmt.Errorf("keepcaps: %w", err)
	}
	if err := caps.apply(); err != nil {
		return 125, err
	}
	// Before the late seccomp load, as runc does: a profile strict enough
	// to refuse what closing takes must still let the command start.
	if err := closeExecFrom(3); err != nil {
		return 125, err
	}
	if p.NoNewPrivileges {
		if err := loadSeccomp(filter); err != nil {
			return 125, err
		}
	}
	// A SIGHUP or SIGINT ignored where lamina was started (nohup, a
	// script's background job) stays ignored in a Go process, and execve
	// keeps what is ignored: the command would ignore them too, and
	// lamina stop with a STOPSIGNAL of SIGINT would not stop it. Handled
	// signals are reset to their defaults by execve.
	for _, sig := range []unix.Signal{unix.SIGHUP, unix.SIGINT} {
		if err := defaultSignal(sig); err != nil {
			return 125, err
		}
	}
	err = unix.Exec(path, p.Args, env)
	code := ExitCannotExecute
	if errors.Is(err, unix.ENOENT) {
		code = ExitNotFound
	}
	return code, fmt.Errorf("exec: %q: %w", p.Args[0], err)
}

// setUser switches to u with raw syscalls on this thread only: the
// capabilities kept across the switch are per thread, and this thread is
// the one that execs.
func setUser(u execUser) error {
	groups := u.Groups
	if groups == nil {
		groups = []int{}
	}
	gs := make([]uint32, len(groups))
	for i, g := range groups {
		gs[i] = uint32(g)
	}
	var gp uintptr
	if len(gs) > 0 {
		gp = uintptrOf(gs)
	}
	if _, _, e := unix.RawSyscall(unix.SYS_SETGROUPS, uintptr(len(gs)), gp, 0); e != 0 {
		return fmt.Errorf("setgroups: %w", e)
	}
	if _, _, e := unix.RawSyscall(unix.SYS_SETRESGID, uintptr(u.GID), uintptr(u.GID), uintptr(u.GID)); e != 0 {
		return fmt.Errorf("setgid %d: %w", u.GID, e)
	}
	if _, _, e := unix.RawSyscall(unix.SYS_SETRESUID, uintptr(u.UID), uintptr(u.UID), uintptr(u.UID)); e != 0 {
		return fmt.Errorf("setuid %d: %w", u.UID, e)
	}
	return nil
}

// closeExecFrom marks every fd from lowest up close-on-exec, so nothing of
// lamina's (the sync socket, the sealed binary, a stray host directory)
// survives into the container's command (CVE-2024-21626). close_range does
// it in one call; kernels before 5.11 get the walk of /proc/self/fd.
func closeExecFrom(lowest int) error {
	if unix.CloseRange(uint(lowest), ^uint(0), unix.CLOSE_RANGE_CLOEXEC) == nil {
		return nil
	}
	entries, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		return fmt.Errorf("list fds: %w", err)
	}
	for _, e := range entries {
		fd, err := strconv.Atoi(e.Name())
		if err != nil || fd < lowest {
			continue
		}
		unix.CloseOnExec(fd)
	}
	return nil
}
