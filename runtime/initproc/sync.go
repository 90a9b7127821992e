package initproc

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"

	"github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"
)

// The monitor and init talk over a SOCK_SEQPACKET socketpair: one JSON
// message per packet, file descriptors (stdio, the pty master) as
// SCM_RIGHTS.
//
//	monitor → init   bootstrap   (spec, compiled seccomp filter; for an
//	                              init spawned ahead, its stdio fds)
//	init → monitor   pty         (with the master fd, when Terminal)
//	init → monitor   ready       (root filesystem built, command found)
//	monitor → init   start
//	init → monitor   error       (any failure; the socket closes on exec)
//
// (The C init gets the flat bootstrap of flat.go instead.) lamina exec's
// CLI and helper:
//
//	CLI → helper     exec        (the process and its confinement)
//	helper → CLI     pty         (with the master fd, when Terminal)
//	CLI → helper     pty-ready   (the pty has the CLI's size)
//	helper → CLI     error       (any failure; the socket closes on exec)

type SyncMsg struct {
	Type string `json:"type"`
	// Protocol is the sender's Protocol, in bootstrap. (The C
	// lamina-init, a binary of its own that must be lamina's own build,
	// gets the flat bootstrap, which has FlatProtocol.)
	Protocol int         `json:"protocol,omitempty"`
	Spec     *specs.Spec `json:"spec,omitempty"`
	// Filter is the compiled seccomp program the command runs under
	// (the spec's seccomp section stays with the monitor).
	Filter []byte       `json:"filter,omitempty"`
	Exec   *ExecRequest `json:"exec,omitempty"`
	// UserDB, in bootstrap, is the user database the command's user is
	// resolved against; nil: init reads the container's own files.
	UserDB *UserDB `json:"userdb,omitempty"`
	Error  string  `json:"error,omitempty"`
	Code   int     `json:"code,omitempty"`
}

// Protocol numbers this version of the messages; a change to them must
// change it.
const Protocol = 1

const maxSyncMsg = 4 << 20

func NewSyncPair() (parent, child *os.File, err error) {
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_SEQPACKET|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, nil, fmt.Errorf("sync socketpair: %w", err)
	}
	// The parent's end is non-blocking, so that os.NewFile puts it in the
	// runtime's poller and a wait for init's next message parks the
	// goroutine instead of holding a thread and a P in recvmsg(2) (which
	// keeps the Go scheduler's sysmon polling every 20 us). The child's
	// end, a separate open file, stays blocking.
	if err := unix.SetNonblock(fds[0], true); err != nil {
		unix.Close(fds[0])
		unix.Close(fds[1])
		return nil, nil, fmt.Errorf("sync socketpair: %w", err)
	}
	return os.NewFile(uintptr(fds[0]), "sync-parent"), os.NewFile(uintptr(fds[1]), "sync-child"), nil
}

// maxSyncFds is the most descriptors one message carries (stdio).
const maxSyncFds = 3

// syncHeader is a SyncMsg without its spec, exec request and user
// database, encoded the same: what init sends. Encoding a SyncMsg builds
// encoders for every type a runtime spec can hold, whether or not the
// message has one (1.2 ms in a fresh process here), and init never sends
// one.
type syncHeader struct {
	Type     string `json:"type"`
	Protocol int    `json:"protocol,omitempty"`
	Filter   []byte `json:"filter,omitempty"`
	Error    string `json:"error,omitempty"`
	Code     int    `json:"code,omitempty"`
}

// SendSync sends m with fds (at most maxSyncFds).
func SendSync(f *os.File, m SyncMsg, fds ...int) error {
	var v any = m
	if m.Spec == nil && m.Exec == nil && m.UserDB == nil {
		v = syncHeader{Type: m.Type, Protocol: m.Protocol, Filter: m.Filter, Error: m.Error, Code: m.Code}
	}
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	if err := sendmsg(f, b, fds); err != nil {
		return fmt.Errorf("sync send %s: %w", m.Type, err)
	}
	return nil
}

// sendmsg sends one packet on f with fds, through the poller when f is in
// it. It does not call f.Fd(), which would put the descriptor back in
// blocking mode.
func sendmsg(f *os.File, b []byte, fds []int) error {
	var oob []byte
	if len(fds) > 0 {
		oob = unix.UnixRights(fds...)
	}
	rc, err := f.SyscallConn()
	if err != nil {
		return err
	}
	var serr error
	if err := rc.Write(func(fd uintptr) bool {
		serr = unix.Sendmsg(int(fd), b, oob, nil, 0)
		return serr != unix.EAGAIN
	}); err != nil {
		return err
	}
	return serr
}

// recvmsg is unix.Recvmsg on f, waiting in the poller when f is in it
// (see sendmsg).
func recvmsg(f *os.File, p, oob []byte, flags int) (n, oobn int, err error) {
	rc, err := f.SyscallConn()
	if err != nil {
		return 0, 0, err
	}
	if cerr := rc.Read(func(fd uintptr) bool {
		n, oobn, _, _, err = unix.Recvmsg(int(fd), p, oob, flags)
		return err != unix.EAGAIN
	}); cerr != nil {
		return 0, 0, cerr
	}
	return n, oobn, err
}

// RecvSync reads one message and the descriptors that came with it; io.EOF
// when the peer closed its end (for init's socket, that is a successful
// execve).
func RecvSync(f *os.File) (SyncMsg, []*os.File, error) {
	oob := make([]byte, unix.CmsgSpace(4*maxSyncFds))
	var m SyncMsg
	for {
		// Peek at the packet's length first: a bootstrap with docker's
		// seccomp profile is tens of KB, most messages a few bytes.
		size, _, err := recvmsg(f, nil, nil, unix.MSG_PEEK|unix.MSG_TRUNC)
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil {
			return m, nil, fmt.Errorf("sync receive: %w", err)
		}
		if size > maxSyncMsg {
			return m, nil, fmt.Errorf("sync receive: message of %d bytes is too large", size)
		}
		buf := make([]byte, size+1)
		n, oobn, err := recvmsg(f, buf, oob, unix.MSG_CMSG_CLOEXEC)
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil {
			return m, nil, fmt.Errorf("sync receive: %w", err)
		}
		if n == 0 {
			return m, nil, io.EOF
		}
		var files []*os.File
		if oobn > 0 {
			cmsgs, err := unix.ParseSocketControlMessage(oob[:oobn])
			if err == nil && len(cmsgs) > 0 {
				fds, _ := unix.ParseUnixRights(&cmsgs[0])
				for _, fd := range fds {
					files = append(files, os.NewFile(uintptr(fd), "sync-fd"))
				}
			}
		}
		if err := decodeSync(buf[:n], &m); err != nil {
			CloseFiles(files)
			return m, nil, fmt.Errorf("sync: bad message: %w", err)
		}
		return m, files, nil
	}
}

// decodeSync decodes a message into m: as a syncHeader, and as the whole
// SyncMsg only when it carries a spec, an exec request or a user
// database. Decoding into a SyncMsg builds what encoding one does (see
// syncHeader: encoding/json's field cache makes the encoders of the
// fields' types), which the monitor, receiving init's replies, never
// needs: 1.3 ms of every run.
func decodeSync(b []byte, m *SyncMsg) error {
	var h struct {
		syncHeader
		Spec   json.RawMessage `json:"spec"`
		Exec   json.RawMessage `json:"exec"`
		UserDB json.RawMessage `json:"userdb"`
	}
	if err := json.Unmarshal(b, &h); err != nil {
		return err
	}
	if h.Spec != nil || h.Exec != nil || h.UserDB != nil {
		return json.Unmarshal(b, m)
	}
	*m = SyncMsg{Type: h.Type, Protocol: h.Protocol, Filter: h.Filter, Error: h.Error, Code: h.Code}
	return nil
}

func CloseFiles(files []*os.File) {
	for _, f := range files {
		f.Close()
	}
}

// ExecRequest is what `lamina exec` asks of the helper that has joined a
// running container: the process to run and the container's confinement.
type ExecRequest struct {
	Process *specs.Process `json:"process"`
	User    string         `json:"user,omitempty"`
	// Filter is the container's compiled seccomp program.
	Filter []byte `json:"filter,omitempty"`
}

// warmDecoder decodes a bootstrap message shaped like a real one while
// init waits for its own: a process's first decode pays for faulting in
// the decoder's code and building its type caches, and the real message
// is decoded on the path of the container's start. The sample is written
// out rather than encoded, which would build the encoders too.
func warmDecoder() {
	var m SyncMsg
	_ = json.Unmarshal(warmBootstrap, &m)
}

// warmBootstrap has the parts of a spec that the monitor sends init.
var warmBootstrap = []byte(`{"type":"bootstrap","protocol":1,"filter":"AA==","spec":{` +
	`"ociVersion":"1.2.0","process":{"terminal":false,"user":{"uid":0,"gid":0},"args":["x"],"env":["A=b"],"cwd":"/",` +
	`"capabilities":{"bounding":["x"],"effective":["x"],"permitted":["x"]},"rlimits":[{"type":"x","hard":1,"soft":1}],"noNewPrivileges":false},` +
	`"root":{"path":"/","readonly":false},"hostname":"x",` +
	`"mounts":[{"destination":"/x","type":"x","source":"x","options":["x"]}],"annotations":{"x":"y"},` +
	`"linux":{"resources":{"memory":{"limit":1},"cpu":{"quota":1},"pids":{"limit":1}},` +
	`"namespaces":[{"type":"pid"}],"maskedPaths":["/x"],"readonlyPaths":["/x"]}}}`)
