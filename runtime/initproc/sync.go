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

type SyncMsg struct {
	Type string `json:"type"`
	// Protocol is the sender's Protocol, in bootstrap: lamina-init is a
	// binary of its own and must be lamina's own build.
	Protocol int         `json:"protocol,omitempty"`
	Spec     *specs.Spec `json:"spec,omitempty"`
	// Filter is the compiled seccomp program the command runs under
	// (the spec's seccomp section stays with the monitor).
	Filter []byte       `json:"filter,omitempty"`
	Exec   *ExecRequest `json:"exec,omitempty"`
	Error  string       `json:"error,omitempty"`
	Code   int          `json:"code,omitempty"`
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
	return os.NewFile(uintptr(fds[0]), "sync-parent"), os.NewFile(uintptr(fds[1]), "sync-child"), nil
}

// maxSyncFds is the most descriptors one message carries (stdio).
const maxSyncFds = 3

// SendSync sends m with fds (at most maxSyncFds).
func SendSync(f *os.File, m SyncMsg, fds ...int) error {
	b, err := json.Marshal(m)
	if err != nil {
		return err
	}
	var oob []byte
	if len(fds) > 0 {
		oob = unix.UnixRights(fds...)
	}
	if err := unix.Sendmsg(int(f.Fd()), b, oob, nil, 0); err != nil {
		return fmt.Errorf("sync send %s: %w", m.Type, err)
	}
	return nil
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
		size, _, _, _, err := unix.Recvmsg(int(f.Fd()), nil, nil, unix.MSG_PEEK|unix.MSG_TRUNC)
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
		n, oobn, _, _, err := unix.Recvmsg(int(f.Fd()), buf, oob, unix.MSG_CMSG_CLOEXEC)
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
		if err := json.Unmarshal(buf[:n], &m); err != nil {
			CloseFiles(files)
			return m, nil, fmt.Errorf("sync: bad message: %w", err)
		}
		return m, files, nil
	}
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
// is decoded on the path of the container's start.
func warmDecoder() {
	var one int64 = 1
	b, err := json.Marshal(SyncMsg{Type: "bootstrap", Protocol: Protocol, Filter: []byte{0}, Spec: &specs.Spec{
		Process: &specs.Process{
			Args: []string{"x"}, Env: []string{"A=b"}, Cwd: "/",
			Capabilities: &specs.LinuxCapabilities{Bounding: []string{"x"}, Effective: []string{"x"}, Permitted: []string{"x"}},
			Rlimits:      []specs.POSIXRlimit{{Type: "x", Hard: 1, Soft: 1}},
		},
		Root:        &specs.Root{Path: "/"},
		Hostname:    "x",
		Mounts:      []specs.Mount{{Destination: "/x", Type: "x", Source: "x", Options: []string{"x"}}},
		Annotations: map[string]string{"x": "y"},
		Linux: &specs.Linux{
			Namespaces:    []specs.LinuxNamespace{{Type: specs.PIDNamespace}},
			Resources:     &specs.LinuxResources{Memory: &specs.LinuxMemory{Limit: &one}, Pids: &specs.LinuxPids{Limit: &one}, CPU: &specs.LinuxCPU{Quota: &one}},
			MaskedPaths:   []string{"/x"},
			ReadonlyPaths: []string{"/x"},
		},
	}})
	if err != nil {
		return
	}
	var m SyncMsg
	_ = json.Unmarshal(b, &m)
}
