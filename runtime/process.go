package runtime

import (
	"errors"
	"fmt"
	"io"
	"os"
	goruntime "runtime"
	"strconv"
	"sync"
	"syscall"

	"github.com/lamina-project/lamina/runtime/detach"
	"github.com/lamina-project/lamina/runtime/initproc"
	"github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"
)

// InitProcess is a container's init as its parent (the monitor) sees it:
// spawned into new namespaces, set up, and waiting for Start.
type InitProcess struct {
	pid int
	// pidfd is init's, from the clone (-1 when the kernel gave none):
	// Kill signals through it, which cannot reach another process that
	// got init's pid once it was reaped.
	pidfd int
	// mu guards reaped and status, and the pidfd's close.
	mu     sync.Mutex
	reaped bool
	status syscall.WaitStatus
	sock   *os.File
	// Pty is the pty master when the spec asks for a terminal.
	Pty       *os.File
	cg        *Cgroup
	resources *specs.LinuxResources
	// flags are the namespaces of an init spawned ahead; stdio is what
	// bootstrap hands it for its fds 0-2 (and then closes).
	flags uintptr
	stdio *Stdio
	// flat says init is the C lamina-init, which takes the flat bootstrap.
	flat bool
}

// Stdio is what the container's fds 0-2 are, when it has no terminal.
type Stdio struct {
	Stdin          *os.File
	Stdout, Stderr *os.File
}

var nsFlags = map[specs.LinuxNamespaceType]uintptr{
	specs.PIDNamespace: unix.CLONE_NEWPID,
	specs.UTSNamespace: unix.CLONE_NEWUTS, specs.IPCNamespace: unix.CLONE_NEWIPC,
	specs.NetworkNamespace: unix.CLONE_NEWNET,
	// The mount and cgroup namespaces are unshared by init itself on
	// bootstrap: the cgroup one after the monitor has put it into its
	// cgroups (v1 has no clone-into-cgroup), the mount one after the
	// monitor has mounted the root filesystem (see spawnInit).
}

// StartInit spawns the container's init for spec, puts it into cg (nil: no
// cgroups), and waits until the root filesystem is built and the command
// found. The caller then calls Start, and Wait. The spec's seccomp profile
// is compiled here, every time; the monitor uses the store's cached
// program, and spawns init before it mounts the root filesystem (see
// spawnInit).
//
// A not-found command is an *ExecError with code 127.
func StartInit(spec *specs.Spec, stdio Stdio, cg *Cgroup) (*InitProcess, error) {
	return startInit(spec, stdio, cg, sealedInit)
}

// initOpener opens the binary a container's init runs from, and says
// whether it is the C init (sealedInit).
type initOpener func() (exe *os.File, flat bool, err error)

// startInit is StartInit with init run from what open gives.
func startInit(spec *specs.Spec, stdio Stdio, cg *Cgroup, open initOpener) (*InitProcess, error) {
	var sc *specs.LinuxSeccomp
	if spec.Linux != nil {
		sc = spec.Linux.Seccomp
	}
	filter, err := compileSeccomp(sc)
	if err != nil {
		return nil, err
	}
	p, err := spawnInit(spec, stdio, open)
	if err != nil {
		return nil, err
	}
	if cg != nil {
		if err := cg.Add(p.Pid()); err != nil {
			p.Kill()
			_, _ = p.Wait()
			return nil, err
		}
	}
	if err := p.bootstrap(spec, filter, nil, cg); err != nil {
		return nil, err
	}
	return p, nil
}

// cloneFlags are the namespaces init is spawned into for spec.
func cloneFlags(spec *specs.Spec) (uintptr, error) {
	var flags uintptr
	for _, ns := range spec.Linux.Namespaces {
		if ns.Path != "" {
			return 0, fmt.Errorf("joining namespace %s by path is not supported", ns.Type)
		}
		flags |= nsFlags[ns.Type]
	}
	return flags, nil
}

// aheadFlags are the namespaces of an init spawned ahead of its spec
// (spawnInitAhead): docker's default, which almost every container has.
const aheadFlags = unix.CLONE_NEWPID | unix.CLONE_NEWUTS | unix.CLONE_NEWIPC | unix.CLONE_NEWNET

// spawnInit starts the container's init in the spec's new namespaces, from
// the sealed binary; it then waits for bootstrap. Its mount and cgroup
// namespaces are unshared by init itself on bootstrap, so that init can be
// spawned (and its runtime start) while the monitor still mounts the root
// filesystem, and the mount is there when init copies the mount table.
func spawnInit(spec *specs.Spec, stdio Stdio, open initOpener) (*InitProcess, error) {
	flags, err := cloneFlags(spec)
	if err != nil {
		return nil, err
	}
	return spawn(flags, stdio, open)
}

// spawnInitAhead starts an init before its container is known, in the
// namespaces of aheadFlags and with /dev/null as stdio, so that its
// process start overlaps the CLI's creation of the container; adopt then
// takes it for a spec with those namespaces, and bootstrap hands it the
// real stdio.
func spawnInitAhead(open initOpener) (*InitProcess, error) {
	devnull, err := os.OpenFile(os.DevNull, os.O_RDWR, 0)
	if err != nil {
		return nil, fmt.Errorf("start init: %w", err)
	}
	defer devnull.Close()
	p, err := spawn(aheadFlags, Stdio{Stdin: devnull, Stdout: devnull, Stderr: devnull}, open)
	if err != nil {
		return nil, err
	}
	p.flags = aheadFlags
	return p, nil
}

// adopt reports whether p, spawned ahead, suits spec; if so, bootstrap
// gives it stdio, which the caller must not close before then.
func (p *InitProcess) adopt(spec *specs.Spec, stdio Stdio) bool {
	flags, err := cloneFlags(spec)
	if err != nil || flags != p.flags {
		return false
	}
	p.stdio = &stdio
	return true
}

func spawn(flags uintptr, stdio Stdio, open initOpener) (*InitProcess, error) {
	exe, flat, err := open()
	if err != nil {
		return nil, err
	}
	defer exe.Close()
	parent, child, err := initproc.NewSyncPair()
	if err != nil {
		return nil, err
	}
	defer child.Close()
	files := []*os.File{stdio.Stdin, stdio.Stdout, stdio.Stderr}
	for i, f := range files {
		if f == nil {
			devnull, err := os.OpenFile(os.DevNull, os.O_RDWR, 0)
			if err != nil {
				parent.Close()
				return nil, fmt.Errorf("start init: %w", err)
			}
			defer devnull.Close()
			files[i] = devnull
		}
	}
	// fd 3 is the sync socket, fd 4 the sealed binary we exec through.
	files = append(files, child, exe)
	fds := make([]uintptr, len(files))
	for i, f := range files {
		fds[i] = f.Fd()
	}
	// syscall's fork and exec, not os/exec's: os.StartProcess probes
	// once per process whether pidfds work, with a child of its own (a
	// clone, a wait: 0.3-0.5 ms here); the clone gives init's pidfd
	// itself.
	pidfd := -1
	attr := &syscall.ProcAttr{
		Env:   []string{},
		Files: fds,
		Sys: &syscall.SysProcAttr{
			Cloneflags: flags,
			Setsid:     true,
			Pdeathsig:  syscall.SIGKILL,
			PidFD:      &pidfd,
		},
	}
	argv := []string{"lamina-init", InitCommand}
	if slack, ok := detach.CallerTimerSlack(); ok {
		// Init inherits this process's raised slack: the command gets
		// the one lamina's caller had.
		argv = append(argv, initproc.TimerSlackFlag+strconv.FormatInt(int64(slack), 10))
	}
	pid, err := syscall.ForkExec("/proc/self/fd/4", argv, attr)
	if errors.Is(err, syscall.EINVAL) { // a kernel without CLONE_PIDFD
		pidfd = -1
		attr.Sys.PidFD = nil
		pid, err = syscall.ForkExec("/proc/self/fd/4", argv, attr)
	}
	goruntime.KeepAlive(files)
	if err != nil {
		parent.Close()
		return nil, fmt.Errorf("start init: %w", err)
	}
	return &InitProcess{pid: pid, pidfd: pidfd, sock: parent, flat: flat}, nil
}

// lookAhead has a C init that waits for its bootstrap look paths up in
// the root filesystem mounted at rootfs (initproc.EncodeAhead); the Go
// init takes no such message.
func (p *InitProcess) lookAhead(rootfs string, paths []string) error {
	if !p.flat || len(paths) == 0 {
		return nil
	}
	if err := initproc.SendFlat(p.sock, initproc.EncodeAhead(rootfs, paths)); err != nil {
		return fmt.Errorf("look-ahead: %w", err)
	}
	return nil
}

// bootstrap hands a spawned init, which the caller has put into cg (nil:
// no cgroups), spec and the compiled seccomp filter (nil: none), and waits
// until the root filesystem is built and the command found. On failure
// init is killed and reaped.
func (p *InitProcess) bootstrap(spec *specs.Spec, filter []byte, db *initproc.UserDB, cg *Cgroup) error {
	if err := p.setup(spec, filter, db, cg); err != nil {
		p.Kill()
		_, _ = p.Wait()
		return err
	}
	return nil
}

func (p *InitProcess) setup(spec *specs.Spec, filter []byte, db *initproc.UserDB, cg *Cgroup) error {
	p.cg, p.resources = cg, spec.Linux.Resources
	// Init gets the program, not the profile: tens of KB of JSON less to
	// encode and decode.
	if spec.Linux.Seccomp != nil {
		s, l := *spec, *spec.Linux
		l.Seccomp = nil
		s.Linux = &l
		spec = &s
	}
	var fds []int
	if p.stdio != nil {
		fds = []int{int(p.stdio.Stdin.Fd()), int(p.stdio.Stdout.Fd()), int(p.stdio.Stderr.Fd())}
	}
	var err error
	if p.flat {
		var b []byte
		if b, err = initproc.EncodeFlat(spec, filter, db); err == nil {
			err = initproc.SendFlat(p.sock, b, fds...)
		}
	} else {
		err = initproc.SendSync(p.sock, initproc.SyncMsg{Type: "bootstrap", Protocol: initproc.Protocol, Spec: spec, Filter: filter, UserDB: db}, fds...)
	}
	if p.stdio != nil {
		closeChildEnds(*p.stdio)
		p.stdio = nil
	}
	if err != nil {
		return err
	}
	for {
		m, fs, err := initproc.RecvSync(p.sock)
		if errors.Is(err, io.EOF) {
			return errors.New("container init exited during setup")
		}
		if err != nil {
			return err
		}
		switch m.Type {
		case "pty":
			if len(fs) != 1 {
				initproc.CloseFiles(fs)
				return errors.New("container init: pty message without its master")
			}
			p.Pty = fs[0]
		case "ready":
			return nil
		case "error":
			if m.Code == ExitNotFound || m.Code == ExitCannotExecute {
				return &ExecError{Code: m.Code, Msg: m.Error}
			}
			return fmt.Errorf("container init: %s", m.Error)
		default:
			return fmt.Errorf("container init: unexpected message %q", m.Type)
		}
	}
}

// Pid is init's pid on the host.
func (p *InitProcess) Pid() int { return p.pid }

// Start lets init exec the command, and reports whether execve worked
// (the sync socket closes on a successful exec).
func (p *InitProcess) Start() error {
	defer p.sock.Close()
	if p.cg != nil {
		if err := p.cg.SetPidsLimit(p.resources); err != nil {
			return err
		}
	}
	// A C init that loaded its privileges after "ready" (initproc's
	// flagEarlyPrivileges) may have failed and gone already: the send
	// fails, and its error message is still there to read.
	serr := initproc.SendSync(p.sock, initproc.SyncMsg{Type: "start"})
	m, _, err := initproc.RecvSync(p.sock)
	if err != nil && serr != nil {
		return serr
	}
	if errors.Is(err, io.EOF) {
		return nil
	}
	if err != nil {
		return err
	}
	if m.Type == "error" {
		if m.Code == ExitNotFound || m.Code == ExitCannotExecute {
			return &ExecError{Code: m.Code, Msg: m.Error}
		}
		return fmt.Errorf("container init: %s", m.Error)
	}
	return fmt.Errorf("container init: unexpected message %q", m.Type)
}

// Kill sends SIGKILL to init; the kernel then kills the whole PID namespace.
// Once init is reaped it does nothing.
func (p *InitProcess) Kill() {
	p.mu.Lock()
	defer p.mu.Unlock()
	switch {
	case p.reaped:
	case p.pidfd >= 0:
		_ = unix.PidfdSendSignal(p.pidfd, unix.SIGKILL, nil, 0)
	default: // not reaped: the pid is still init's
		_ = unix.Kill(p.pid, unix.SIGKILL)
	}
}

// Wait waits for init to exit and returns docker's exit code for it:
// its status, or 128+signal.
func (p *InitProcess) Wait() (int, error) {
	p.mu.Lock()
	reaped := p.reaped
	p.mu.Unlock()
	if !reaped {
		// Not reaped yet: its pid is still its own.
		waitExited(p.pid)
		var ws syscall.WaitStatus
		var err error
		for {
			_, err = syscall.Wait4(p.pid, &ws, 0, nil)
			if err != syscall.EINTR {
				break
			}
		}
		p.mu.Lock()
		if err == nil && !p.reaped {
			p.reaped, p.status = true, ws
			if p.pidfd >= 0 {
				unix.Close(p.pidfd)
				p.pidfd = -1
			}
		}
		reaped = p.reaped
		p.mu.Unlock()
		if !reaped {
			return -1, fmt.Errorf("wait for init %d: %w", p.pid, err)
		}
	}
	p.sock.Close()
	if p.stdio != nil { // adopted, never bootstrapped
		closeChildEnds(*p.stdio)
		p.stdio = nil
	}
	return exitCode(p.status), nil
}

// exitCode is docker's exit code for a wait status: the exit status, or
// 128+signal.
func exitCode(ws syscall.WaitStatus) int {
	if ws.Signaled() {
		return 128 + int(ws.Signal())
	}
	return ws.ExitStatus()
}

// ExitCode turns a wait status into docker's exit code.
func ExitCode(ps *os.ProcessState, err error) (int, error) {
	if ps == nil {
		return -1, err
	}
	if ws, ok := ps.Sys().(syscall.WaitStatus); ok {
		return exitCode(ws), nil
	}
	return ps.ExitCode(), nil
}

// waitExited returns once the child pid has exited (without reaping it),
// waiting in the runtime's poller on a pidfd. os.Process.Wait blocks in
// waitid(2), holding a thread and a P for as long as the container runs,
// which keeps the Go scheduler's sysmon waking every 20 us. When a pidfd
// cannot be had it returns at once, and the caller's Wait blocks as before.
func waitExited(pid int) {
	fd, err := unix.PidfdOpen(pid, unix.PIDFD_NONBLOCK)
	if err != nil {
		return
	}
	f := os.NewFile(uintptr(fd), "pidfd")
	defer f.Close()
	rc, err := f.SyscallConn()
	if err != nil {
		return
	}
	_ = rc.Read(func(fd uintptr) bool {
		var info unix.Siginfo
		err := unix.Waitid(unix.P_PIDFD, int(fd), &info, unix.WEXITED|unix.WNOHANG|unix.WNOWAIT, nil)
		return err != nil || info.Signo != 0
	})
}
