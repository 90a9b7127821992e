package runtime

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

type syncMsg struct {
	Type string      `json:"type"`
	Spec *specs.Spec `json:"spec,omitempty"`
	// Filter is the compiled seccomp program the command runs under
	// (the spec's seccomp section stays with the monitor).
	Filter []byte       `json:"filter,omitempty"`
	Exec   *execRequest `json:"exec,omitempty"`
	Error  string       `json:"error,omitempty"`
	Code   int          `json:"code,omitempty"`
}

const maxSyncMsg = 4 << 20

func newSyncPair() (parent, child *os.File, err error) {
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_SEQPACKET|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, nil, fmt.Errorf("sync socketpair: %w", err)
	}
	return os.NewFile(uintptr(fds[0]), "sync-parent"), os.NewFile(uintptr(fds[1]), "sync-child"), nil
}

// maxSyncFds is the most descriptors one message carries (stdio).
const maxSyncFds = 3

// sendSync sends m with fds (at most maxSyncFds).
func sendSync(f *os.File, m syncMsg, fds ...int) error {
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

// recvSync reads one message and the descriptors that came with it; io.EOF
// when the peer closed its end (for init's socket, that is a successful
// execve).
func recvSync(f *os.File) (syncMsg, []*os.File, error) {
	oob := make([]byte, unix.CmsgSpace(4*maxSyncFds))
	var m syncMsg
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
			closeFiles(files)
			return m, nil, fmt.Errorf("sync: bad message: %w", err)
		}
		return m, files, nil
	}
}

func closeFiles(files []*os.File) {
	for _, f := range files {
		f.Close()
	}
}
