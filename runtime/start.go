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
	"syscall"

	"github.com/lamina-project/lamina/runtime/prespawn"
	"golang.org/x/sys/unix"
)

// A monitor is started in two steps, so that its process start (the Go
// runtime, the binary's packages: the larger part of a monitor's cost)
// overlaps the CLI's creation of the container:
//
//	Prepare  spawns `lamina __monitor`, detached in its own session so
//	         that the container outlives the CLI; for `lamina run` the
//	         process was already started by package prespawn's
//	         constructor, before the CLI's Go runtime, and Prepare takes
//	         it over;
//	Start    writes the monitor's orders (monitorOrders: the store, the
//	         container's ID, attached or not) to its fd 4 and waits for
//	         its report on fd 3: the container runs, or why not.
//
// fd 5 is the monitor's end of the CLI's attach connection, a socketpair
// (unused when detached): an attached monitor starts the command once it
// has read the client's hello, so the client misses no output and no round
// trip through the attach socket delays the start. A monitor that reads
// EOF instead of its orders exits.

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
	proc   *os.Process
	root   string
	report *os.File      // the report pipe's read end
	id     *os.File      // the orders pipe's write end
	conn   *net.UnixConn // the attach connection, nil when detached
}

// Prepare spawns a monitor for a container still to be created, or takes
// over the one package prespawn started; attach makes it wait for a client
// attached from the start (Pending.Start's AttachOptions).
func (s *Store) Prepare(attach bool) (*Pending, error) {
	// A monitor runs in /, so that it holds no filesystem busy: its
	// store's path must not be relative.
	root, err := filepath.Abs(s.Root())
	if err != nil {
		return nil, fmt.Errorf("start: %w", err)
	}
	if m, ok := prespawn.Take(); ok {
		return adopt(m, root, attach)
	}
	exe, err := os.Executable()
	if err != nil {
		return nil, fmt.Errorf("start: %w", err)
	}
	var files []*os.File // the monitor's ends, closed here once it has them
	defer func() {
		for _, f := range files {
			f.Close()
		}
	}()
	p := &Pending{root: root}
	var reportW, idR *os.File
	if p.report, reportW, err = os.Pipe(); err != nil {
		return nil, fmt.Errorf("start: %w", err)
	}
	files = append(files, reportW)
	if idR, p.id, err = os.Pipe(); err != nil {
		p.report.Close()
		return nil, fmt.Errorf("start: %w", err)
	}
	files = append(files, idR)
	// fd 5 is always the monitor's end of a socketpair, as a prespawned
	// monitor's is, so that it knows what fd 5 is when it is detached.
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		p.close()
		return nil, fmt.Errorf("start: %w", err)
	}
	files = append(files, os.NewFile(uintptr(fds[1]), "attach-monitor"))
	ours := os.NewFile(uintptr(fds[0]), "attach")
	if !attach {
		ours.Close()
	} else if p.conn, err = attachConn(ours); err != nil {
		p.close()
		return nil, err
	}
	// Until it knows its container, the monitor has nowhere to log:
	// stdout and stderr are /dev/null, then monitor.log.
	cmd := exec.Command(exe, MonitorCommand)
	cmd.ExtraFiles = files
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	cmd.Dir = "/"
	if err := cmd.Start(); err != nil {
		p.close()
		return nil, fmt.Errorf("start monitor: %w", err)
	}
	p.proc = cmd.Process
	return p, nil
}

// adopt makes a Pending of the monitor package prespawn started.
func adopt(m prespawn.Monitor, root string, attach bool) (*Pending, error) {
	p := &Pending{root: root, report: m.Report, id: m.ID}
	proc, err := os.FindProcess(m.Pid)
	if err != nil {
		m.Attach.Close()
		p.close()
		return nil, fmt.Errorf("start monitor: %w", err)
	}
	p.proc = proc
	if !attach {
		m.Attach.Close()
		return p, nil
	}
	if p.conn, err = attachConn(m.Attach); err != nil {
		p.Abort()
		return nil, err
	}
	return p, nil
}

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

// Abort ends p's monitor, which never gets a container, and reaps it.
func (p *Pending) Abort() {
	p.close()
	_, _ = p.proc.Wait()
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
	// What a previous start logged would be mistaken for this one's.
	_ = os.Remove(c.File("monitor.log"))
	orders, _ := json.Marshal(monitorOrders{Root: p.root, ID: c.ID, Attach: p.conn != nil})
	_, err = p.id.Write(orders)
	p.id.Close()
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
		_, _ = p.proc.Wait()
		if a != nil {
			a.conn.Close()
			<-a.done
		}
		msg, _ := os.ReadFile(c.File("monitor.log"))
		return nil, fmt.Errorf("container monitor failed: %s", strings.TrimSpace(string(msg)))
	}
	// The monitor lives on; it is reparented when this process exits.
	go func() { _, _ = p.proc.Wait() }()
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
