package cli

import (
	"errors"
	"io"
	"os"
	"os/signal"
	"sync"
	"syscall"

	"github.com/lamina-project/lamina/fs"
	"github.com/lamina-project/lamina/runtime"
	"github.com/lamina-project/lamina/runtime/detach"
	"golang.org/x/sys/unix"
)

// MainDetached is Main for the detached half of a `lamina run` (package
// detach): this process is the CLI, whose caller waits for the stub, and
// it stays on as the container's monitor. The exit code and a signal the
// CLI dies of go to the stub. It returns when the monitors it runs have
// ended.
func MainDetached(stub *detach.Stub, args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	// This process serves the container's union as its monitor: the
	// processor to spare that asks for is set before the run's
	// goroutines start, so that the spawn of the container's init
	// (below) does not queue behind the CLI's start on a 2-CPU machine.
	fs.SetServerProcs()
	// The container's ID is drawn now, so that its init can be put into
	// its cgroups as soon as it is spawned.
	id := runtime.NewID()
	ahead := runtime.SpawnAhead(id)
	h := newHost(stub, ahead, id)
	code := run(&App{Stdin: stdin, Stdout: stdout, Stderr: stderr, host: h}, newRunRoot, args)
	// Not taken by a monitor: the run failed before it had one.
	ahead.Discard()
	h.finish(code)
	return 0
}

// host is what a detached CLI needs of its process: the signals the stub
// forwards, which the CLI either handles or must act out as a signal's
// default action would (the process may be a monitor: it must not die),
// and the monitors that run in it.
type host struct {
	stub *detach.Stub
	// ahead is the container init spawned at the process's start, for
	// the first monitor run here; set before the CLI runs.
	ahead *runtime.Ahead

	mu sync.Mutex // guards the fields below
	// subs are the CLI's signal handlers, as signal.Notify's.
	subs map[chan<- os.Signal][]os.Signal
	// monitors run in this process; once one has its container, a
	// signal's default action ends the stub, not the process.
	monitors []*runtime.Pending
	hosting  bool
	// aborting: a signal is ending the process before its monitors have
	// their containers; start refuses to hand them one.
	aborting bool
	// log is where the process's stdout and stderr go once the CLI is
	// done (the container's monitor.log).
	log string
	// ignored are the signals the process started with ignored: a CLI
	// that does not handle one goes on ignoring it.
	ignored map[syscall.Signal]bool
	// id is the ID of the container ahead was spawned for, until newID
	// hands it out.
	id string
}

func newHost(stub *detach.Stub, ahead *runtime.Ahead, id string) *host {
	h := &host{stub: stub, ahead: ahead, id: id, subs: map[chan<- os.Signal][]os.Signal{}, ignored: map[syscall.Signal]bool{}}
	forwarded := detach.Forwarded()
	for _, sig := range forwarded {
		h.ignored[sig.(syscall.Signal)] = signal.Ignored(sig)
	}
	// The subscription is made on the side: the runtime enables each
	// signal through a round trip to a thread of its own (ensureSigM),
	// seven of them, 1-2 ms of a loaded 2-CPU machine on the run's path.
	// A signal that comes before it does what it did before newHost: its
	// default action, to this process and then the stub. The goroutine
	// lives as long as the process: signals arrive until the end.
	go func() {
		sigs := make(chan os.Signal, 8)
		signal.Notify(sigs, forwarded...)
		for sig := range sigs {
			h.deliver(sig.(syscall.Signal))
		}
	}()
	go h.watchStub()
	return h
}

// watchStub waits for the stub to end. Killed, not told to end, it takes
// the CLI with it, as when they were one process: this process dies too,
// or, once it hosts a monitor, lets go of the caller's stdio, so that a
// pipe from `lamina run` ends while the container runs on.
func (h *host) watchStub() {
	fd, err := unix.PidfdOpen(h.stub.Pid, unix.PIDFD_NONBLOCK)
	// The stub is this process's parent for as long as it lives: a
	// parent that changed means it is gone, and the pid may be another
	// process's already.
	if err != nil || os.Getppid() != h.stub.Pid {
		if err == nil {
			unix.Close(fd)
		}
		h.stubGone()
		return
	}
	// A pidfd turns readable when its process ends. Through the runtime's
	// poller the wait holds no thread of its own.
	pidfd := os.NewFile(uintptr(fd), "stub-pidfd")
	defer pidfd.Close()
	fds := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}
	ended := func(timeout int) bool {
		n, err := unix.Poll(fds, timeout)
		return n > 0 || (err != nil && err != unix.EINTR)
	}
	rc, err := pidfd.SyscallConn()
	if err == nil {
		err = rc.Read(func(uintptr) bool { return ended(0) })
	}
	if err != nil { // not pollable: wait in a thread of its own
		for !ended(-1) {
		}
	}
	h.stubGone()
}

func (h *host) stubGone() {
	if h.stub.Said() {
		return // it ended as told
	}
	h.mu.Lock()
	hosting := h.hosting
	h.mu.Unlock()
	if !hosting {
		_ = unix.Kill(os.Getpid(), syscall.SIGKILL)
	}
	h.release()
}

// notify and stop are signal.Notify and signal.Stop for the CLI's
// handlers.
func (h *host) notify(c chan<- os.Signal, sigs ...os.Signal) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.subs[c] = append(h.subs[c], sigs...)
}

func (h *host) stop(c chan<- os.Signal) {
	h.mu.Lock()
	defer h.mu.Unlock()
	delete(h.subs, c)
}

// deliver hands sig to the CLI's handlers, as package signal would, or
// else does what sig does to a process that does not handle it: SIGWINCH,
// or a signal the process started with ignored, nothing; any other,
// before a monitor here has its container, abort the monitors and kill
// this process (the stub dies of it in turn), and after, kill the stub
// alone and let this process go on without its caller's stdio.
func (h *host) deliver(sig syscall.Signal) {
	h.mu.Lock()
	handled := false
	for c, sigs := range h.subs {
		for _, s := range sigs {
			if s == sig {
				handled = true
				select {
				case c <- sig:
				default:
				}
			}
		}
	}
	hosting := h.hosting
	monitors := h.monitors
	ignore := handled || sig == syscall.SIGWINCH || h.ignored[sig]
	if !ignore && !hosting {
		h.aborting = true // no monitor here gets its container now
	}
	h.mu.Unlock()
	switch {
	case ignore:
	case !hosting:
		// A monitor without its container yet leaves nothing behind
		// (the init spawned ahead, its cgroup) when it is aborted.
		for _, p := range monitors {
			p.Abort()
		}
		signal.Reset(sig)
		_ = unix.Kill(os.Getpid(), sig)
	default:
		h.stub.Die(sig)
		h.release()
	}
}

// newID returns the ID for the container the command creates: the one
// drawn at a detached CLI's start (MainDetached), the first time.
func (a *App) newID() string {
	if h := a.host; h != nil {
		h.mu.Lock()
		id := h.id
		h.id = ""
		h.mu.Unlock()
		if id != "" {
			return id
		}
	}
	return runtime.NewID()
}

// prepare is s.Prepare, with the monitor run here in a detached CLI, for
// the container that will have ID id.
func (a *App) prepare(s *runtime.Store, attach bool, id string) (*runtime.Pending, error) {
	if a.host == nil {
		return s.Prepare(attach)
	}
	p, err := s.PrepareHere(attach, id, autoRemove(a.Stderr), a.host.ahead)
	if err == nil {
		a.host.mu.Lock()
		a.host.monitors = append(a.host.monitors, p)
		a.host.mu.Unlock()
	}
	return p, err
}

// start is p.Start. In a detached CLI the process becomes c's monitor
// from here on, whatever becomes of the CLI.
func (a *App) start(p *runtime.Pending, c *runtime.Container, o runtime.AttachOptions) (*runtime.Attachment, error) {
	if h := a.host; h != nil {
		h.mu.Lock()
		if h.aborting {
			h.mu.Unlock()
			return nil, errors.New("interrupted before the container started")
		}
		h.hosting = true
		h.log = c.File("monitor.log")
		h.mu.Unlock()
	}
	return p.Start(c, o)
}

// notify and stopNotify are signal.Notify and signal.Stop, through the
// host in a detached CLI.
func (a *App) notify(c chan<- os.Signal, sigs ...os.Signal) {
	if a.host != nil {
		a.host.notify(c, sigs...)
		return
	}
	signal.Notify(c, sigs...)
}

func (a *App) stopNotify(c chan<- os.Signal) {
	if a.host != nil {
		a.host.stop(c)
		return
	}
	signal.Stop(c)
}

// finish ends the CLI's part: the stub exits with code (unless it died of
// a signal already), and this process, if it runs monitors, lets go of
// its caller's stdio and waits for them.
func (h *host) finish(code int) {
	h.stub.Exit(code)
	h.mu.Lock()
	monitors := h.monitors
	h.mu.Unlock()
	if len(monitors) == 0 {
		return
	}
	h.release()
	for _, p := range monitors {
		<-p.Done()
	}
}

// release gives this process a monitor's stdio (runtime.RedirectStdio:
// the container's monitor.log, or /dev/null before there is a container
// or when the log cannot be opened), and leaves the caller's working
// directory: what a monitor process has.
func (h *host) release() {
	h.mu.Lock()
	log := h.log
	h.mu.Unlock()
	if log == "" || runtime.RedirectStdio(log) != nil {
		_ = runtime.RedirectStdio(os.DevNull)
	}
	_ = os.Chdir("/")
}
