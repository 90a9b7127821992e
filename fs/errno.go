package fs

import (
	"errors"
	"syscall"
)

// unwrapErrno finds the errno inside a wrapped error, so FUSE replies
// carry the real reason (ENOSPC, EPERM, ...) rather than EIO.
func unwrapErrno(err error) error {
	var en syscall.Errno
	if errors.As(err, &en) {
		return en
	}
	return err
}
