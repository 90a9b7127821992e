package runtime

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"sync"

	"golang.org/x/sys/unix"
)

// The attach protocol, on the monitor's unix socket, is frames of
// [type byte][length uint32 BE][payload]. The client first sends an
// attachHello; then the monitor sends output and, last, the exit status,
// and the client sends stdin, its end, window sizes and signals.
const (
	frameStdout byte = 1
	frameStderr byte = 2
	frameExit   byte = 3

	frameHello      byte = 10
	frameStdin      byte = 11
	frameStdinClose byte = 12
	frameResize     byte = 13
	frameSignal     byte = 14
)

type attachHello struct {
	Stdin, Stdout, Stderr bool
	// Size is the client's terminal (rows, cols), when it has one: the
	// monitor gives it to the pty before it starts the command, which
	// would otherwise race the first resize frame.
	Size *[2]uint16 `json:",omitempty"`
}

// ExitStatus is how a container ended, as the monitor tells attached
// clients.
type ExitStatus struct {
	ExitCode  int
	Error     string `json:",omitempty"`
	OOMKilled bool   `json:",omitempty"`
}

func writeFrame(w io.Writer, typ byte, p []byte) error {
	hdr := make([]byte, 5, 5+len(p))
	hdr[0] = typ
	binary.BigEndian.PutUint32(hdr[1:], uint32(len(p)))
	_, err := w.Write(append(hdr, p...))
	return err
}

func readFrame(r io.Reader) (byte, []byte, error) {
	var hdr [5]byte
	if _, err := io.ReadFull(r, hdr[:]); err != nil {
		return 0, nil, err
	}
	n := binary.BigEndian.Uint32(hdr[1:])
	if n > 1<<20 {
		return 0, nil, fmt.Errorf("attach: frame too large (%d)", n)
	}
	p := make([]byte, n)
	if _, err := io.ReadFull(r, p); err != nil {
		return 0, nil, err
	}
	return hdr[0], p, nil
}

// socketPath names the attach socket through an O_PATH fd of the
// container's directory: unix socket paths are limited to 108 bytes, store
// paths are not. The returned function closes the fd.
func socketPath(c *Container) (string, func(), error) {
	fd, err := unix.Open(c.dir, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return "", nil, fmt.Errorf("attach socket: %w", err)
	}
	return fmt.Sprintf("/proc/self/fd/%d/attach.sock", fd), func() { unix.Close(fd) }, nil
}

// AttachOptions are the streams of an attaching client.
type AttachOptions struct {
	Stdin          io.Reader // nil: do not attach stdin
	Stdout, Stderr io.Writer // nil: do not attach
	// Resize and Signals, when set, are forwarded until the container ends.
	Resize  <-chan [2]uint16 // rows, cols
	Signals <-chan int
}

// Attachment is a client's connection to a container's monitor.
type Attachment struct {
	conn *net.UnixConn
	mu   sync.Mutex // guards writes to conn
	done chan struct{}
	exit ExitStatus
	err  error
}

// Attach connects to c's monitor. Output starts flowing at once; a monitor
// started to wait for an attach starts the command on this connection.
func (s *Store) Attach(c *Container, o AttachOptions) (*Attachment, error) {
	path, closeDir, err := socketPath(c)
	if err != nil {
		return nil, err
	}
	defer closeDir()
	conn, err := net.DialUnix("unix", nil, &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		return nil, fmt.Errorf("attach to container %s: %w", c.ID[:12], err)
	}
	return newAttachment(conn, o)
}

// newAttachment says hello on conn and serves o's streams over it.
func newAttachment(conn *net.UnixConn, o AttachOptions) (*Attachment, error) {
	a := &Attachment{conn: conn, done: make(chan struct{})}
	h := attachHello{Stdin: o.Stdin != nil, Stdout: o.Stdout != nil, Stderr: o.Stderr != nil}
	select {
	case sz := <-o.Resize: // the size the terminal has now, queued by the caller
		h.Size = &sz
	default:
	}
	hello, _ := json.Marshal(h)
	if err := a.send(frameHello, hello); err != nil {
		conn.Close()
		return nil, fmt.Errorf("attach: %w", err)
	}
	go a.readLoop(o.Stdout, o.Stderr)
	if o.Stdin != nil {
		go a.stdinLoop(o.Stdin)
	}
	go func() {
		for {
			select {
			case sz := <-o.Resize:
				b, _ := json.Marshal(sz)
				_ = a.send(frameResize, b)
			case sig := <-o.Signals:
				b, _ := json.Marshal(sig)
				_ = a.send(frameSignal, b)
			case <-a.done:
				return
			}
		}
	}()
	return a, nil
}

func (a *Attachment) send(typ byte, p []byte) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	return writeFrame(a.conn, typ, p)
}

func (a *Attachment) stdinLoop(r io.Reader) {
	buf := make([]byte, 32<<10)
	for {
		n, err := r.Read(buf)
		if n > 0 {
			if a.send(frameStdin, buf[:n]) != nil {
				return
			}
		}
		if err != nil {
			_ = a.send(frameStdinClose, nil)
			return
		}
	}
}

func (a *Attachment) readLoop(stdout, stderr io.Writer) {
	defer close(a.done)
	defer a.conn.Close()
	for {
		typ, p, err := readFrame(a.conn)
		if err != nil {
			a.err = errors.New("lost the connection to the container monitor")
			a.exit = ExitStatus{ExitCode: 255}
			return
		}
		switch typ {
		case frameStdout:
			if stdout != nil {
				_, _ = stdout.Write(p)
			}
		case frameStderr:
			if stderr != nil {
				_, _ = stderr.Write(p)
			}
		case frameExit:
			a.err = json.Unmarshal(p, &a.exit)
			return
		}
	}
}

// Wait returns the container's exit status once it has ended.
func (a *Attachment) Wait() (ExitStatus, error) {
	<-a.done
	return a.exit, a.err
}

// Done is closed when the container has ended or the connection is lost.
func (a *Attachment) Done() <-chan struct{} { return a.done }

// monitor side ----------------------------------------------------------

// attachClient is one attached connection as the monitor serves it.
type attachClient struct {
	conn  net.Conn
	hello attachHello
	mu    sync.Mutex // guards writes to conn
}

func (cl *attachClient) send(typ byte, p []byte) {
	cl.mu.Lock()
	defer cl.mu.Unlock()
	_ = writeFrame(cl.conn, typ, p)
}

// hub fans the container's output out to attached clients.
type hub struct {
	mu      sync.Mutex // guards clients
	clients []*attachClient
}

func (h *hub) add(cl *attachClient) {
	h.mu.Lock()
	h.clients = append(h.clients, cl)
	h.mu.Unlock()
}

func (h *hub) remove(cl *attachClient) {
	h.mu.Lock()
	defer h.mu.Unlock()
	for i, c := range h.clients {
		if c == cl {
			h.clients = append(h.clients[:i], h.clients[i+1:]...)
			return
		}
	}
}

func (h *hub) broadcast(typ byte, p []byte) {
	h.mu.Lock()
	cls := append([]*attachClient(nil), h.clients...)
	h.mu.Unlock()
	for _, cl := range cls {
		if (typ == frameStdout && cl.hello.Stdout) || (typ == frameStderr && cl.hello.Stderr) || typ == frameExit {
			cl.send(typ, p)
		}
	}
}

// streamWriter is one output stream going to the log and the clients.
type streamWriter struct {
	hub   *hub
	typ   byte
	split *lineSplitter
}

func (w *streamWriter) Write(p []byte) (int, error) {
	_, _ = w.split.Write(p)
	w.hub.broadcast(w.typ, p)
	return len(p), nil
}

// stdinSink is where attached clients' stdin goes (a pipe or the pty).
type stdinSink struct {
	mu sync.Mutex // guards w
	w  *os.File
}

func (s *stdinSink) write(p []byte) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.w != nil {
		_, _ = s.w.Write(p)
	}
}

// close ends the container's stdin (docker's StdinOnce); a pty stays open.
func (s *stdinSink) close(isPty bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.w != nil && !isPty {
		s.w.Close()
		s.w = nil
	}
}
