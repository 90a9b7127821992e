package runtime

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"

	"golang.org/x/sys/unix"
)

// A monitor is started in two steps, so that its start overlaps the
// CLI's creation of the container:
//
//	Prepare  spawns `lamina __monitor`, detached in its own session so
//	         that the container outlives the CLI; PrepareHere runs the
//	         monitor in the CLI's own process instead, for a CLI that is
//	         the detached half of a run (package detach);
//	Start    writes the monitor's orders (monitorOrders: the store, the
//	         container's ID, attached or not) to its fd 4 and waits for
//	         its report on fd 3: the container runs, or why not.
//
// fd 5 is the monitor's end of the CLI's attach connection, a socketpair
// (unused when detached): an attached monitor starts the command once it
// has read the client's hello, so the client misses no output and no round
// trip through the attach socket delays the start. A monitor that reads
// EOF instead of its orders exits. A monitor in the CLI's process has the
// same three pipes, not as fds 3-5.

// monitorOrders is what a prepared monitor is told to run.
type monitorOrders struct {
	Root   string // the lamina store root
	ID     string // the container's full ID
	Attach bool   // serve the attach connection on fd 5
}

// startReport is what a monitor tells the CLI that started it: nothing
// when the container runs (or waits for its attach), else why not.
type startReport struct {
	Error string `json:",omitempty"`
	Code  int    `json:",omitempty"`
}

// Pending is a monitor spawned for a container that is being created.
// It must be started or aborted.
type Pending struct {
	root   string
	report *os.File      // the report pipe's read end
	id     *os.File      // the orders pipe's write end
	conn   *net.UnixConn // the attach connection, nil when detached
	// wait waits for the monitor to end: its process, or the goroutine
	// that runs it here.
	wait func()
	// done is closed when a monitor run here has ended; nil for a
	// monitor process.
	done chan struct{}
	// handoff takes the container to a monitor run here, which then does
	// not read back the record the CLI has just written; nil for a
	// monitor process.
	handoff chan handed
	// gate is what Gate was given, handed over with the container.
	gate func() error
	// fresh is what Fresh said.
	fresh bool
	// early: Handoff gave the monitor the container before its record
	// was complete; recorded then takes the record's outcome (Recorded),
	// and aborted is closed by Abort. mu guards early and aborted, which
	// a signal's Abort (the CLI's host) reads from another goroutine.
	mu        sync.Mutex
	early     bool
	recorded  chan error
	aborted   chan struct{}
	abortOnce sync.Once
}

// handed is what the CLI hands a monitor run in its process (Pending.Start).
type handed struct {
	c    *Container
	gate func() error // nil: nothing to wait for
	// fresh: the CLI has just made c, its host files included
	// (WriteHostFiles).
	fresh bool
	// aborted, when not nil, is closed when the CLI gives up on the
	// start (Pending.Abort after Handoff).
	aborted <-chan struct{}
}

// errAborted is a start's error when its CLI gave it up.
var errAborted = errors.New("start aborted")

// Handoff gives a monitor run here (PrepareHere) container c as soon as
// its directories and host files exist, before its record is complete:
// the monitor mounts its root filesystem and bootstraps its init while
// the CLI writes the record, and starts the command only once Recorded
// has said it is complete (and Gate's gate has opened). The CLI must call
// Recorded, or Abort, which waits for the monitor to end (its union
// unmounted) before the CLI removes what it made. Gate and Fresh, if
// wanted, are called before. A monitor process cannot (false): the
// container then goes to it with Start.
func (p *Pending) Handoff(c *Container) bool {
	if p.handoff == nil {
		return false
	}
	p.mu.Lock()
	p.early = true
	p.recorded = make(chan error, 1)
	p.aborted = make(chan struct{})
	p.mu.Unlock()
	gate := p.gate
	p.handoff <- handed{c: c, gate: func() error { return p.earlyGate(gate) }, fresh: p.fresh, aborted: p.aborted}
	orders, _ := json.Marshal(monitorOrders{Root: p.root, ID: c.ID, Attach: p.conn != nil})
	_, _ = p.id.Write(orders) // a pipe to this process: its reader is there
	p.id.Close()
	return true
}

// Early reports whether Handoff gave the monitor its container.
func (p *Pending) Early() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.early
}

// Recorded tells the monitor given a container by Handoff that its record
// is complete (nil) or failed; only the first outcome counts.
func (p *Pending) Recorded(err error) {
	select {
	case p.recorded <- err:
	default:
	}
}

// earlyGate is a handed-off container's gate: its record complete, the
// start not aborted, then gate.
func (p *Pending) earlyGate(gate func() error) error {
	var err error
	select {
	case err = <-p.recorded:
		p.recorded <- err // for the next asker
	case <-p.aborted:
		return errAborted
	}
	if err != nil {
		return err
	}
	select {
	case <-p.aborted:
		return errAborted
	default:
	}
	if gate != nil {
		return gate()
	}
	return nil
}

// Fresh tells a monitor run here (PrepareHere) that the container it
// will be given was made by this process, which wrote its host files
// (WriteHostFiles): the monitor does not write them again.
func (p *Pending) Fresh() { p.fresh = true }

// Gate makes a monitor run here (PrepareHere) wait for gate before it
// starts the container's command, and fail the start with gate's error
// if there is one: the container's root filesystem is mounted and its
// init bootstrapped in the meantime, but nothing of the image runs. A
// monitor process cannot (false): its caller must wait for gate before
// Start.
func (p *Pending) Gate(gate func() error) bool {
	if p.handoff == nil {
		return false
	}
	p.gate = gate
	return true
}

// monitorEnds are a monitor's ends of its pipes.
type monitorEnds struct{ report, orders, attach *os.File }

func (e monitorEnds) close() {
	e.report.Close()
	e.orders.Close()
	e.attach.Close()
}

// preparePipes makes a monitor's pipes: p has the CLI's ends.
func (s *Store) preparePipes(attach bool) (*Pending, monitorEnds, error) {
	// A monitor runs in /, so that it holds no filesystem busy: its
	// store's path must not be relative.
	root, err := filepath.Abs(s.Root())
	if err != nil {
		return nil, monitorEnds{}, fmt.Errorf("start: %w", err)
	}
	p := &Pending{root: root}
	var e monitorEnds
	if p.report, e.report, err = os.Pipe(); err != nil {
		return nil, monitorEnds{}, fmt.Errorf("start: %w", err)
	}
	if e.orders, p.id, err = os.Pipe(); err != nil {
		p.report.Close()
		e.report.Close()
		return nil, monitorEnds{}, fmt.Errorf("start: %w", err)
	}
	// The attach end is always a socketpair's, so that a monitor knows
	// what it is when it is detached.
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		p.close()
		e.report.Close()
		e.orders.Close()
		return nil, monitorEnds{}, fmt.Errorf("start: %w", err)
	}
	e.attach = os.NewFile(uintptr(fds[1]), "attach-monitor")
	ours := os.NewFile(uintptr(fds[0]), "attach")
	if !attach {
		ours.Close()
	} else if p.conn, err = attachConn(ours); err != nil {
		p.close()
		e.close()
		return nil, monitorEnds{}, err
	}
	return p, e, nil
}

// Prepare spawns a monitor for a container still to be created; attach
// makes it wait for a client attached from the start (Pending.Start's
// AttachOptions).
func (s *Store) Prepare(attach bool) (*Pending, error) {
	exe, err := os.Executable()
	if err != nil {
		return nil, fmt.Errorf("start: %w", err)
	}
	p, e, err := s.preparePipes(attach)
	if err != nil {
		return nil, err
	}
	defer e.close() // the monitor has its own copies
	// Until it knows its container, the monitor has nowhere to log:
	// stdout and stderr are /dev/null, then monitor.log.
	cmd := exec.Command(exe, MonitorCommand)
	cmd.ExtraFiles = []*os.File{e.report, e.orders, e.attach}
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	cmd.Dir = "/"
	if err := cmd.Start(); err != nil {
		p.close()
		return nil, fmt.Errorf("start monitor: %w", err)
	}
	p.wait = func() { _, _ = cmd.Process.Wait() }
	return p, nil
}

// PrepareHere is Prepare with the monitor run in this process, for a CLI
// that is detached from its caller and stays on as the container's
// monitor (package detach). onExit is as RunMonitor's. Done tells when the
// monitor has ended; the process must not exit before.
//
// The monitor sets what is the process's: GOMAXPROCS and the GC's pace
// here, and the umask (0) once it mounts laminafs. The CLI must have made
// its files by Start.
//
// id, when not empty, is the ID the container will have: the monitor then
// makes its cgroups and puts the init it spawns ahead into them while the
// caller creates the container. Joining a cgroup v1 waits out an RCU grace
// period, 6-14 ms on this project's test machine, which the container's
// start no longer waits for.
//
// ahead, when not nil, is the init the monitor takes instead of spawning
// one (see Ahead).
func (s *Store) PrepareHere(attach bool, id string, onExit ExitHook, ahead *Ahead) (*Pending, error) {
	p, e, err := s.preparePipes(attach)
	if err != nil {
		return nil, err
	}
	p.done = make(chan struct{})
	p.handoff = make(chan handed, 1)
	go func() {
		defer close(p.done)
		_ = runMonitor(e.report, e.orders, e.attach, false, id, p.handoff, onExit, ahead)
	}()
	p.wait = func() { <-p.done }
	return p, nil
}

// Done is closed when a monitor PrepareHere started has ended; it is nil
// for a monitor process.
func (p *Pending) Done() <-chan struct{} { return p.done }

// attachConn makes the CLI's end of the attach socketpair a connection.
func attachConn(f *os.File) (*net.UnixConn, error) {
	conn, err := net.FileConn(f)
	f.Close()
	if err != nil {
		return nil, fmt.Errorf("start: %w", err)
	}
	return conn.(*net.UnixConn), nil
}

func (p *Pending) close() {
	p.report.Close()
	p.id.Close()
	if p.conn != nil {
		p.conn.Close()
	}
}

// Abort ends p's monitor, which never gets a container, and waits for it.
func (p *Pending) Abort() {
	if p.Early() {
		p.abortOnce.Do(func() { close(p.aborted) })
	}
	p.close()
	p.wait()
}

// Start hands c to p's monitor and returns once the container runs. For a
// Prepare(true) monitor the attachment serves o's streams; else it is nil.
func (p *Pending) Start(c *Container, o AttachOptions) (*Attachment, error) {
	defer p.report.Close()
	// The hello goes first: the monitor then never waits for it.
	var a *Attachment
	var err error
	if p.conn != nil {
		if a, err = newAttachment(p.conn, o); err != nil {
			p.Abort()
			return nil, err
		}
	}
	if !p.Early() {
		// What a previous start logged would be mistaken for this one's.
		_ = os.Remove(c.File("monitor.log"))
		if p.handoff != nil {
			p.handoff <- handed{c: c, gate: p.gate, fresh: p.fresh} // before the orders, which the monitor waits for
		}
		orders, _ := json.Marshal(monitorOrders{Root: p.root, ID: c.ID, Attach: p.conn != nil})
		_, err = p.id.Write(orders)
		p.id.Close()
	}
	if err != nil {
		p.Abort()
		if a != nil {
			<-a.done
		}
		return nil, fmt.Errorf("start: %w", err)
	}
	out, _ := bufio.NewReader(p.report).ReadBytes('\n')
	if len(bytes.TrimSpace(out)) == 0 {
		// The monitor died before it could report.
		p.wait()
		if a != nil {
			a.conn.Close()
			<-a.done
		}
		msg, _ := os.ReadFile(c.File("monitor.log"))
		return nil, fmt.Errorf("container monitor failed: %s", strings.TrimSpace(string(msg)))
	}
	// The monitor lives on; a process is reparented when this one exits.
	go p.wait()
	var rep startReport
	if json.Unmarshal(out, &rep) != nil {
		err = fmt.Errorf("container monitor: bad report %q", out)
	} else if rep.Error != "" {
		err = errors.New(rep.Error)
		if rep.Code == ExitNotFound || rep.Code == ExitCannotExecute {
			err = &ExecError{Code: rep.Code, Msg: rep.Error}
		}
	}
	if err != nil {
		if a != nil {
			a.conn.Close()
			<-a.done
		}
		return nil, err
	}
	return a, nil
}

// Start starts c's monitor and returns once the container runs.
func (s *Store) Start(c *Container) error {
	p, err := s.Prepare(false)
	if err != nil {
		return err
	}
	_, err = p.Start(c, AttachOptions{})
	return err
}
