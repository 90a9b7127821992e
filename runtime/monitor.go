package runtime

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path"
	"path/filepath"
	"runtime/debug"
	"strings"
	"sync"
	"time"

	"github.com/lamina-project/lamina/fs"
	"github.com/lamina-project/lamina/runtime/initproc"
	"github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"
)

// MonitorCommand is the hidden argument that makes the lamina binary a
// container's monitor (`lamina __monitor`, its orders on fd 4; see
// start.go).
const MonitorCommand = "__monitor"

// Root is the lamina store root the containers directory is in.
func (s *Store) Root() string { return strings.TrimSuffix(s.dir, "/containers") }

// monitor runs one container from mount to unmount.
type monitor struct {
	s        *Store
	c        *Container
	report   *os.File
	reported bool
	// client is the connection of a client attached from the start (nil
	// for a detached start); the command waits for its hello.
	client *os.File

	hub   hub
	stdin stdinSink
	pty   *os.File
	init  *InitProcess
	// ahead is an init spawned before the container was known, until
	// takeInit takes it (nil then, or when none could be spawned).
	ahead *InitProcess
	// early is the cgroup made for the container's ID, known ahead, with
	// ahead in it, until cgroup takes it.
	early *earlyCgroup
	// aheadDone, when not nil, is closed once the spawn of ahead (and
	// the start of early) has ended: neither may be read before
	// (awaitAhead).
	aheadDone chan struct{}
	// gate, when not nil, must return nil before the container's command
	// starts (Pending.Gate).
	gate func() error
	// fresh: the container was handed over by the CLI in this process
	// that has just made it, host files included (WriteHostFiles).
	fresh bool
	// aborted, when not nil, is closed when the CLI gives up on a start
	// it handed over early (Pending.Handoff).
	aborted  <-chan struct{}
	attached chan struct{} // closed by the first client to attach
	once     sync.Once
}

// ExitHook runs in a container's monitor once the container has stopped,
// before attached clients hear its exit status (the CLI's --rm hooks in
// there), with the state the monitor is to record. What it returns, when
// not nil, runs after they have: work the container's caller does not
// wait for. A hook that returns something has taken the container out of
// the store (Store.UnlistExited): the monitor then records nothing of its
// exit, and unmounts the union, where the container's directory has gone,
// only after the exit status is out; what it returns runs once the union
// is unmounted. The union may still be mounted while the hook runs (a
// mount that can move, relocatable: the state does not have the
// unmount's failure yet), or already unmounted.
type ExitHook func(*Store, *Container, *State) (after func())

// relocatable is a mount that is told where its mount point has moved
// (with a directory above it renamed), so that it unmounts it there.
type relocatable interface{ Relocate(target string) }

// RunMonitor is the monitor's body, `lamina __monitor` with the fds
// Prepare gives it (see start.go): it waits for its orders, then runs the
// container, and onExit (nil: none) once it has stopped.
func RunMonitor(args []string, onExit ExitHook) error {
	// The fds came in without close-on-exec: no child of the monitor may
	// hold them, or the CLI never sees EOF. Nor may anything else the
	// CLI's own parent left open reach the container.
	unix.CloseOnExec(3)
	unix.CloseOnExec(4)
	unix.CloseOnExec(5)
	_ = unix.CloseRange(6, ^uint(0), unix.CLOSE_RANGE_CLOEXEC)
	report, orders, attach := os.NewFile(3, "report"), os.NewFile(4, "orders"), os.NewFile(5, "attach")
	if len(args) != 0 {
		orders.Close()
		attach.Close()
		return fmt.Errorf("monitor: unexpected arguments %q", args)
	}
	return runMonitor(report, orders, attach, true, "", nil, onExit, nil)
}

// runMonitor runs a monitor on its three pipes (start.go), in a process of
// its own or, with ownStdio false, in the CLI's, which keeps its stdio.
func runMonitor(report, orders, attach *os.File, ownStdio bool, id string, handoff <-chan handed, onExit ExitHook, ahead *Ahead) error {
	// A monitor's live heap is a few MB. At the default GOGC its first
	// collection fell within a short container's start and teardown (about
	// 3 ms of CPU on the path of every lamina run --rm); a longer-lived
	// monitor still collects, at five times its live heap.
	debug.SetGCPercent(400)
	// The monitor serves the container's union (laminafs) from this
	// process.
	fs.SetServerProcs()
	m := &monitor{report: report, attached: make(chan struct{})}
	// While the CLI creates the container, the container's init starts in
	// docker's default namespaces; a container with others gets a new
	// one (monitor.takeInit). Failing here only costs that head start.
	// The spawn (or the wait for ahead's, spawned by the CLI before it
	// started this monitor) goes on beside the wait for the orders and
	// the mount of the root filesystem, which do not need it: only the
	// bootstrap does.
	m.aheadDone = make(chan struct{})
	go func() {
		defer close(m.aheadDone)
		if ahead != nil {
			m.ahead, m.early = ahead.take()
		} else {
			m.ahead, _ = spawnInitAhead(sealedInit)
		}
		if m.ahead != nil && m.early == nil && id != "" {
			m.early = startEarlyCgroup(id, m.ahead.Pid())
		}
	}()
	if handoff == nil {
		// A monitor in the CLI's process gets the container in memory
		// (handoff): it has no record to decode.
		warmJSON()
	}
	err := m.main(orders, attach, ownStdio, handoff, onExit)
	m.awaitAhead()
	if m.ahead != nil { // never taken: no container, or it failed before its start
		m.ahead.Kill()
		_, _ = m.ahead.Wait()
	}
	m.dropEarly() // never taken either
	m.sendReport(err)
	return err
}

// main reads the monitor's orders and runs the container; attach is the
// monitor's end of the attach socketpair, and ownStdio says the process's
// stdout and stderr are the monitor's, to point at its log.
func (m *monitor) main(orders, attach *os.File, ownStdio bool, handoff <-chan handed, onExit ExitHook) error {
	b, err := io.ReadAll(orders)
	orders.Close()
	if err != nil || len(b) == 0 {
		attach.Close()
		m.report.Close()
		m.reported = true // nobody to report to
		return nil        // the CLI gave up before it had a container
	}
	var o monitorOrders
	if err := json.Unmarshal(b, &o); err != nil || !isID(o.ID) || o.Root == "" {
		attach.Close()
		return fmt.Errorf("monitor: bad orders %q", b)
	}
	if o.Attach {
		m.client = attach
	} else {
		attach.Close() // a detached start's unused attach end
	}
	if m.s, err = OpenStore(o.Root); err != nil {
		return err
	}
	if ownStdio {
		// From here on, what the monitor has to say goes to monitor.log,
		// which the CLI shows when the monitor dies before it reports.
		if err := RedirectStdio(filepath.Join(m.s.dir, o.ID, "monitor.log")); err != nil {
			return err
		}
	}
	// A container handed over in memory is the record the CLI wrote,
	// which the monitor only reads (see runtimeSpec) until the container
	// has exited (an exit hook that removes it moves its directory,
	// UnlistExited).
	var c *Container
	select {
	case h := <-handoff:
		c = h.c
		if c != nil && c.ID == o.ID {
			m.gate, m.fresh, m.aborted = h.gate, h.fresh, h.aborted
		}
	default:
	}
	if c == nil || c.ID != o.ID {
		if c, err = m.s.Load(o.ID); err != nil {
			return err
		}
	}
	if _, err := c.RuntimeSpec(); err != nil {
		return err
	}
	return m.run(c, onExit)
}

// RedirectStdio gives this process a monitor's stdio: stdin /dev/null,
// stdout and stderr the file log (created, or appended to). A monitor
// process takes it once it knows its container (Pending.Start has removed
// what a previous start logged); a CLI that is its container's monitor
// (package detach), once the CLI is done.
func RedirectStdio(log string) error {
	logf, err := os.OpenFile(log, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return fmt.Errorf("monitor log: %w", err)
	}
	defer logf.Close()
	null, err := os.Open(os.DevNull)
	if err != nil {
		return fmt.Errorf("monitor log: %w", err)
	}
	defer null.Close()
	for fd, f := range []*os.File{null, logf, logf} {
		if err := unix.Dup3(int(f.Fd()), fd, 0); err != nil {
			return fmt.Errorf("monitor log: %w", err)
		}
	}
	return nil
}

// takeInit returns the init spawned ahead when it suits spec, with stdio
// to be handed over at bootstrap; else it discards it and spawns one. Either
// way stdio is the init's, not the caller's, to close.
func (m *monitor) takeInit(spec *specs.Spec, stdio Stdio) (*InitProcess, error) {
	m.awaitAhead()
	if ip := m.ahead; ip != nil {
		m.ahead = nil
		if ip.adopt(spec, stdio) {
			return ip, nil
		}
		ip.Kill()
		_, _ = ip.Wait()
	}
	ip, err := spawnInit(spec, stdio, sealedInit)
	closeChildEnds(stdio)
	return ip, err
}

// awaitAhead waits for the spawn of the init ahead, if one was started.
func (m *monitor) awaitAhead() {
	if m.aheadDone != nil {
		<-m.aheadDone
		m.aheadDone = nil
	}
}

func (m *monitor) sendReport(err error) {
	if m.reported {
		return
	}
	m.reported = true
	rep := startReport{}
	if err != nil {
		rep.Error = err.Error()
		rep.Code = 125
		var ee *ExecError
		if errors.As(err, &ee) {
			rep.Code = ee.Code
		}
	}
	b, _ := json.Marshal(rep)
	_, _ = m.report.Write(append(b, '\n'))
	m.report.Close()
}

func (m *monitor) run(c *Container, onExit ExitHook) error {
	m.c = c
	// monitor.lock is held until this process exits: it is how others
	// know the container runs.
	lockf, err := os.OpenFile(c.File("monitor.lock"), os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return fmt.Errorf("monitor lock: %w", err)
	}
	defer lockf.Close()
	if err := unix.Flock(int(lockf.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		return fmt.Errorf("container %s is already running", c.ID[:12])
	}
	// What init is given besides its stdio and cgroups, the runtime spec
	// with its files and the seccomp program, is made on the side from
	// here on: beside the mount of the root filesystem, which mostly
	// waits on the kernel.
	side := make(chan initInputs, 1)
	go func() { side <- m.initInputs() }()

	logf, err := openLogFile(c.File("ctr.log"))
	if err != nil {
		return err
	}
	defer logf.Close()
	stdio, pumps, err := m.stdio(c.Spec, logf)
	if err != nil {
		return err
	}
	// Init is taken (the one spawned ahead, still starting maybe) or
	// spawned beside the mount of the root filesystem: it then waits
	// for its bootstrap.
	type taken struct {
		ip  *InitProcess
		err error
	}
	tc := make(chan taken, 1)
	go func() {
		ip, err := m.takeInit(c.Spec, stdio)
		tc <- taken{ip, err}
	}()
	mnt, err := mountRootfs(m.s, c)
	t := <-tc
	if err == nil && t.err == nil && c.Driver == DriverLaminafs {
		// Init looks up, while the inputs of its bootstrap are made,
		// what its setup will: each first lookup is a FUSE round trip.
		// A failed send leaves the lookups to the bootstrap (whose
		// send then fails too, if init is gone).
		_ = t.ip.lookAhead(c.File("merged"), aheadPaths(c.Spec))
	}
	in := <-side
	if t.err != nil {
		if mnt != nil {
			_ = mnt.Unmount()
		}
		m.recordNotStarted(t.err)
		return t.err
	}
	ip := t.ip
	abort := func(err error) error {
		ip.Kill()
		_, _ = ip.Wait()
		return err
	}
	if err != nil {
		return abort(err)
	}
	defer mnt.Unmount()
	if in.err != nil {
		return abort(in.err)
	}
	spec := in.spec
	cg, err := m.cgroup(c.ID, ip.Pid(), spec.Linux.Resources)
	if err != nil {
		return abort(err)
	}
	defer cg.Destroy()
	// The attach socket (an inode made on the store's filesystem) is
	// made while init builds the root filesystem.
	type listened struct {
		ln  *net.UnixListener
		err error
	}
	lc := make(chan listened, 1)
	go func() {
		ln, err := m.listen()
		lc <- listened{ln, err}
	}()
	err = ip.bootstrap(spec, in.filter, in.userDB, cg)
	if m.gate != nil {
		// By now the gate has long opened, as a rule: it is checked
		// after the bootstrap, which it does not hold up, and its error
		// is the start's even if the bootstrap failed (on an image
		// being removed, say).
		if gerr := m.gate(); gerr != nil {
			if err == nil {
				ip.Kill()
				_, _ = ip.Wait()
			}
			err = gerr
		}
	}
	l := <-lc
	if l.ln != nil {
		defer l.ln.Close()
	}
	defer os.Remove(c.File("attach.sock"))
	if err != nil {
		m.recordNotStarted(err)
		return err
	}
	if l.err != nil {
		return abort(l.err)
	}
	ln := l.ln
	m.init = ip
	if ip.Pty != nil {
		m.pty = ip.Pty
		m.stdin.w = ip.Pty
		pumps = append(pumps, pump(ip.Pty, &streamWriter{hub: &m.hub, typ: frameStdout, split: &lineSplitter{log: logf, stream: "stdout"}}))
	}
	go m.accept(ln)
	if m.client != nil {
		conn, err := net.FileConn(m.client)
		m.client.Close()
		if err != nil {
			return abort(fmt.Errorf("attach: %w", err))
		}
		go m.serve(conn.(*net.UnixConn))
		m.sendReport(nil)
		select {
		case <-m.attached:
		case <-m.aborted: // nil but for an early handoff
			return abort(errAborted)
		case <-time.After(60 * time.Second):
		}
	}
	if err := ip.Start(); err != nil {
		_, _ = ip.Wait()
		m.recordNotStarted(err)
		st := ExitStatus{ExitCode: 125, Error: err.Error()}
		var ee *ExecError
		if errors.As(err, &ee) {
			st.ExitCode = ee.Code
		}
		b, _ := json.Marshal(st)
		m.hub.broadcast(frameExit, b)
		return err
	}
	started := time.Now().UTC()
	if err := m.updateState(func(st *State) {
		*st = State{Status: "running", Running: true, Pid: ip.Pid(), StartedAt: started,
			MonitorPid: os.Getpid(), Cgroup: cg}
	}); err != nil {
		ip.Kill()
		_, _ = ip.Wait()
		return err
	}
	m.sendReport(nil)

	code, _ := ip.Wait()
	waitPumps(pumps, 5*time.Second)
	oom := cg.OOMKilled()
	finished := time.Now().UTC()
	// The cgroups and the union go at once: neither waits for the other,
	// and the exit status does not wait for the cgroups (a cgroup v1's
	// rmdir takes its time: some 0.1-0.3 ms for each of four here). What
	// their removal fails of is added to the state once it has.
	cgErrc := make(chan error, 1)
	go func() { cgErrc <- cg.Destroy() }()
	final := State{Status: "exited", ExitCode: code, OOMKilled: oom, StartedAt: started, FinishedAt: finished}
	exited := func() {
		b, _ := json.Marshal(ExitStatus{ExitCode: code, OOMKilled: oom})
		m.hub.broadcast(frameExit, b)
		m.hub.mu.Lock()
		for _, cl := range m.hub.clients {
			cl.conn.Close()
		}
		m.hub.mu.Unlock()
	}
	// A union whose mount can move is unmounted after the hook, which
	// may take the container away (--rm: its directory moves, the union
	// in it), and after its caller has heard the exit status: the
	// unmount (some 0.3-0.7 ms of RCU grace periods here) is then off the
	// run's path. Else, or when the hook leaves the container, it is
	// unmounted first, and its failure recorded.
	var after func()
	hooked, gone := false, false
	if r, ok := mnt.(relocatable); ok && onExit != nil {
		hooked = true
		if after = onExit(m.s, c, &final); after != nil {
			gone = true
			r.Relocate(c.File("merged"))
			exited()
			if err := mnt.Unmount(); err != nil {
				// What is still mounted, after's reclaim unmounts
				// before it removes anything, or leaves the files
				// for a later sweep.
				fmt.Fprintf(os.Stderr, "lamina: --rm: %v\n", err)
			}
		}
	}
	if !gone {
		if mntErr := mnt.Unmount(); mntErr != nil {
			final.Error = mntErr.Error()
		}
		if onExit != nil && !hooked {
			after = onExit(m.s, c, &final)
		}
		if after == nil { // not taken away by the hook: the exit is recorded
			_ = m.updateState(func(st *State) { *st = final })
		}
		exited()
	}
	// The union's server ends after the union is unmounted: the exit
	// status above did not wait for it, the removal of the container's
	// files below does.
	var late []error
	if sm, ok := mnt.(interface{ Settled() error }); ok {
		late = append(late, sm.Settled())
	}
	late = append(late, <-cgErrc)
	if err := errors.Join(late...); err != nil && after == nil {
		_ = m.updateState(func(st *State) {
			if st.Error != "" {
				st.Error += "\n"
			}
			st.Error += err.Error()
		})
	}
	if after != nil {
		after()
	}
	return nil
}

// cgroup returns container id's cgroups, with resources r set and init pid
// in them: the early ones when they are id's (the limits are set once the
// init, still waiting for its bootstrap, is in), else new ones.
func (m *monitor) cgroup(id string, pid int, r *specs.LinuxResources) (*Cgroup, error) {
	m.awaitAhead()
	e := m.early
	m.early = nil
	if e != nil {
		<-e.done
		if e.cg != nil && e.id == id {
			if err := e.cg.set(r); err != nil {
				_ = e.cg.Destroy()
				return nil, err
			}
			if e.pid != pid { // the init spawned ahead did not suit
				if err := e.cg.Add(pid); err != nil {
					_ = e.cg.Destroy()
					return nil, err
				}
			}
			return e.cg, nil
		}
	}
	cg, err := NewCgroup(id, r)
	if err == nil {
		if err = cg.Add(pid); err != nil {
			_ = cg.Destroy()
		}
	}
	if e != nil {
		// Another container's (or failed): pid has left it, if it was in.
		_ = e.cg.Destroy()
	}
	if err != nil {
		return nil, err
	}
	return cg, nil
}

// dropEarly removes the early cgroup, if it was never taken, once what was
// put into it has left or died.
func (m *monitor) dropEarly() {
	m.awaitAhead()
	if e := m.early; e != nil {
		m.early = nil
		e.drop()
	}
}

func (m *monitor) updateState(f func(*State)) error {
	unlock, err := m.s.LockContainer(m.c)
	if err != nil {
		return err
	}
	defer unlock()
	st := &State{}
	if b, err := os.ReadFile(m.c.File("state.json")); err == nil {
		_ = json.Unmarshal(b, st)
	}
	f(st)
	return m.s.SaveState(m.c, st)
}

// recordNotStarted records a command that could not run: docker leaves
// such a container "created" with the exit code and the error.
func (m *monitor) recordNotStarted(err error) {
	if m.gate != nil {
		// A container handed over early (Pending.Handoff): its record,
		// state included, is written once the gate has answered.
		_ = m.gate()
	}
	code := 125
	var ee *ExecError
	if errors.As(err, &ee) {
		code = ee.Code
	}
	_ = m.updateState(func(st *State) {
		*st = State{Status: "created", ExitCode: code, Error: err.Error()}
	})
}

// initInputs is what init is bootstrapped with besides its stdio and
// cgroups: the runtime spec (runtimeSpec), the seccomp program and, when
// it can be read here, the user database (userDB).
type initInputs struct {
	spec   *specs.Spec
	filter []byte
	userDB *initproc.UserDB
	err    error
}

func (m *monitor) initInputs() initInputs {
	spec, err := m.runtimeSpec(m.c.File("merged"))
	if err != nil {
		return initInputs{err: err}
	}
	filter, err := seccompFilter(m.s.seccompDir(), spec.Linux.Seccomp)
	return initInputs{spec: spec, filter: filter, userDB: userDB(m.c, spec), err: err}
}

// maxUserDBFile bounds what userDB reads of one file; a larger one is
// left to init.
const maxUserDBFile = 1 << 20

// userDB reads the container's /etc/passwd and /etc/group from its layers,
// so that init does not read them through the union (FUSE round trips on
// the start's path, about 1 ms). nil, and init reads them itself, unless
// the driver is a union of layers in kernel overlay's format whose files
// nothing can change before init reads them (the container does not run
// yet), no mount of the spec covers them (nor reaches them through a
// symlink), and both resolve to regular files, or to nothing, through
// plain directories (layerWalk).
func userDB(c *Container, spec *specs.Spec) *initproc.UserDB {
	if c.Driver != DriverLaminafs && c.Driver != DriverOverlay {
		return nil // vfs copies the layers while this runs
	}
	layers := c.Layers.Lower
	if c.Layers.Upper != "" {
		layers = append([]string{c.Layers.Upper}, layers...)
	}
	files := []string{"/etc/passwd", "/etc/group"}
	w := newLayerWalk(layers)
	for _, mnt := range spec.Mounts {
		d := path.Clean("/" + mnt.Destination)
		for _, f := range files {
			if d == "/" || f == d || strings.HasPrefix(f, d+"/") {
				return nil
			}
		}
		// Nor through a symlink in the image.
		found, at, _, ok := w.lookup(d[1:])
		if !ok {
			return nil
		}
		var st unix.Stat_t
		if found && (unix.Lstat(at, &st) != nil || st.Mode&unix.S_IFMT == unix.S_IFLNK) {
			return nil
		}
	}
	var content [2][]byte
	for i, f := range files {
		found, at, _, ok := w.lookup(f[1:])
		if !ok {
			return nil
		}
		if !found {
			continue
		}
		b, ok := readRegular(at, maxUserDBFile)
		if !ok {
			return nil
		}
		content[i] = b
	}
	return &initproc.UserDB{Passwd: content[0], Group: content[1]}
}

// readRegular reads the regular file at path (not through a final
// symlink), if it is at most max bytes.
func readRegular(path string, max int64) ([]byte, bool) {
	f, err := os.OpenFile(path, os.O_RDONLY|unix.O_NOFOLLOW|unix.O_NONBLOCK, 0)
	if err != nil {
		return nil, false
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil || !fi.Mode().IsRegular() || fi.Size() > max {
		return nil, false
	}
	b, err := io.ReadAll(io.LimitReader(f, max+1))
	if err != nil || int64(len(b)) > max {
		return nil, false
	}
	return b, true
}

// hostFiles are the files a start writes into the container's directory
// and binds over the image's (runtimeSpec): name there, and destination.
var hostFiles = []struct{ name, dest string }{
	{"hosts", "/etc/hosts"}, {"hostname", "/etc/hostname"}, {"resolv.conf", "/etc/resolv.conf"},
}

// runtimeSpec is the container's spec with what only a start knows: the
// mount point, and the bind mounts of /etc/hosts, /etc/hostname and
// /etc/resolv.conf, whose files it writes (WriteHostFiles) unless the
// container was made by this process just before (fresh).
func (m *monitor) runtimeSpec(rootfs string) (*specs.Spec, error) {
	// Only the root and the mount list change: the rest is shared with
	// the container's record, which this process does not change.
	s := *m.c.Spec
	spec := &s
	root := *spec.Root
	root.Path = rootfs
	spec.Root = &root
	spec.Mounts = append([]specs.Mount(nil), spec.Mounts...)
	if !m.fresh {
		if err := WriteHostFiles(m.c); err != nil {
			return nil, err
		}
	}
	for _, f := range hostFiles {
		opts := []string{"rbind", "rprivate"}
		if spec.Root.Readonly {
			opts = append(opts, "ro")
		}
		spec.Mounts = append(spec.Mounts, specs.Mount{Destination: f.dest, Type: "bind", Source: m.c.File(f.name), Options: opts})
	}
	return spec, nil
}

// WriteHostFiles writes into c's directory the files a start bind-mounts
// at hostFiles' paths: hosts (the host's own with --network host), the
// hostname, and the host's resolv.conf. A monitor writes them at each
// start; a run's CLI writes them beside the container's record, so that
// the monitor it hands the container to need not.
func WriteHostFiles(c *Container) error {
	spec, err := c.RuntimeSpec()
	if err != nil {
		return err
	}
	hostNet := true
	for _, ns := range spec.Linux.Namespaces {
		if ns.Type == specs.NetworkNamespace {
			hostNet = false
		}
	}
	hosts := "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\nfe00::0\tip6-localnet\nff00::0\tip6-mcastprefix\nff02::1\tip6-allnodes\nff02::2\tip6-allrouters\n"
	if hostNet {
		if h, err := os.ReadFile("/etc/hosts"); err == nil {
			hosts = string(h)
		}
	}
	resolv, _ := os.ReadFile("/etc/resolv.conf")
	content := map[string]string{"hosts": hosts, "hostname": spec.Hostname + "\n", "resolv.conf": string(resolv)}
	for _, f := range hostFiles {
		if err := os.WriteFile(c.File(f.name), []byte(content[f.name]), 0o644); err != nil {
			return fmt.Errorf("%s: %w", f.dest, err)
		}
	}
	return nil
}

func (m *monitor) listen() (*net.UnixListener, error) {
	path, closeDir, err := socketPath(m.c)
	if err != nil {
		return nil, err
	}
	defer closeDir()
	_ = os.Remove(m.c.File("attach.sock"))
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		return nil, fmt.Errorf("attach socket: %w", err)
	}
	ln.SetUnlinkOnClose(false)
	return ln, nil
}

// stdio makes the container's stdio: pipes for output (to the log and
// attached clients), a pipe for stdin when it is open, /dev/null otherwise.
// With a terminal, init makes the pty and the pumps start once it has.
func (m *monitor) stdio(spec *specs.Spec, logf *logFile) (Stdio, []chan struct{}, error) {
	devnull, err := os.OpenFile(os.DevNull, os.O_RDWR, 0)
	if err != nil {
		return Stdio{}, nil, err
	}
	if spec.Process.Terminal {
		return Stdio{Stdin: devnull, Stdout: devnull, Stderr: devnull}, nil, nil
	}
	st := Stdio{Stdin: devnull}
	var pumps []chan struct{}
	if m.c.Config.OpenStdin {
		r, w, err := os.Pipe()
		if err != nil {
			return st, nil, err
		}
		st.Stdin = r
		m.stdin.w = w
	}
	for _, s := range []struct {
		dst  **os.File
		typ  byte
		name string
	}{{&st.Stdout, frameStdout, "stdout"}, {&st.Stderr, frameStderr, "stderr"}} {
		r, w, err := os.Pipe()
		if err != nil {
			return st, nil, err
		}
		*s.dst = w
		pumps = append(pumps, pump(r, &streamWriter{hub: &m.hub, typ: s.typ, split: &lineSplitter{log: logf, stream: s.name}}))
	}
	return st, pumps, nil
}

func closeChildEnds(st Stdio) {
	for _, f := range []*os.File{st.Stdin, st.Stdout, st.Stderr} {
		if f != nil {
			f.Close()
		}
	}
}

// pump copies r to w until EOF (or EIO from a pty whose last holder has
// gone), then flushes w's partial line.
func pump(r *os.File, w *streamWriter) chan struct{} {
	done := make(chan struct{})
	go func() {
		defer close(done)
		_, _ = io.Copy(w, r)
		w.split.flush()
	}()
	return done
}

func waitPumps(pumps []chan struct{}, limit time.Duration) {
	deadline := time.After(limit)
	for _, p := range pumps {
		select {
		case <-p:
		case <-deadline:
			return
		}
	}
}

// accept serves attach clients until the listener closes.
func (m *monitor) accept(ln *net.UnixListener) {
	for {
		conn, err := ln.AcceptUnix()
		if err != nil {
			return
		}
		go m.serve(conn)
	}
}

func (m *monitor) serve(conn *net.UnixConn) {
	defer conn.Close()
	// Only root (or the store's owner) may attach.
	if cred, err := unix.GetsockoptUcred(connFd(conn), unix.SOL_SOCKET, unix.SO_PEERCRED); err != nil ||
		(cred.Uid != 0 && int(cred.Uid) != os.Getuid()) {
		return
	}
	typ, p, err := readFrame(conn)
	if err != nil || typ != frameHello {
		return
	}
	cl := &attachClient{conn: conn}
	if err := json.Unmarshal(p, &cl.hello); err != nil {
		return
	}
	if sz := cl.hello.Size; sz != nil && m.pty != nil {
		_ = unix.IoctlSetWinsize(int(m.pty.Fd()), unix.TIOCSWINSZ, &unix.Winsize{Row: sz[0], Col: sz[1]})
	}
	m.hub.add(cl)
	defer m.hub.remove(cl)
	m.once.Do(func() { close(m.attached) })
	for {
		typ, p, err := readFrame(conn)
		if err != nil {
			if cl.hello.Stdin && m.c.Config.StdinOnce {
				m.stdin.close(m.pty != nil)
			}
			return
		}
		switch typ {
		case frameStdin:
			m.stdin.write(p)
		case frameStdinClose:
			m.stdin.close(m.pty != nil)
		case frameResize:
			var sz [2]uint16
			if json.Unmarshal(p, &sz) == nil && m.pty != nil {
				_ = unix.IoctlSetWinsize(int(m.pty.Fd()), unix.TIOCSWINSZ, &unix.Winsize{Row: sz[0], Col: sz[1]})
			}
		case frameSignal:
			var sig int
			if json.Unmarshal(p, &sig) == nil && m.init != nil && sig > 0 {
				_ = unix.Kill(m.init.Pid(), unix.Signal(sig))
			}
		}
	}
}

func connFd(c *net.UnixConn) int {
	fd := -1
	if rc, err := c.SyscallConn(); err == nil {
		_ = rc.Control(func(f uintptr) { fd = int(f) })
	}
	return fd
}

// warmJSON decodes a container record shaped like a real one, and builds
// its runtime spec, while the monitor waits for its orders: a process's
// first decode pays for faulting in the decoder's code and building its
// type caches, and the real record is decoded on the path of the
// container's start.
func warmJSON() {
	b, err := json.Marshal(&Container{ID: "0", Run: Options{Args: []string{"true"}, Network: "none"}})
	if err != nil {
		return
	}
	var c Container
	if json.Unmarshal(b, &c) == nil {
		_, _ = c.RuntimeSpec()
	}
}
