// Package fsops describes filesystem operations as data, applies them to a
// directory tree, and snapshots trees so that two of them can be compared.
// It is the common language of lamina's union filesystem tests: the
// conformance suite, the differential test against kernel overlay and the
// fuzz target all build sequences of Op, Apply them through a mount, and
// Diff the Snapshots.
//
// Paths in an Op are relative to the root given to Apply and never contain
// "..". Symlinks made by Apply point at relative names without "..", so
// following one never leaves the tree.
package fsops

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"golang.org/x/sys/unix"
)

// Kind is what an Op does.
type Kind uint8

const (
	Create      Kind = iota // open(Path, O_CREAT|O_EXCL|O_WRONLY, Mode) and write Data
	Write                   // open(Path, O_WRONLY|Flags) and pwrite Data at Off (write, for O_APPEND)
	Truncate                // truncate(Path, Off)
	Chmod                   // chmod(Path, Mode)
	Chown                   // lchown(Path, UID, GID)
	Utimes                  // utimensat(Path, {Time, Time}, AT_SYMLINK_NOFOLLOW)
	Rename                  // rename(Path, Path2)
	Unlink                  // unlink(Path)
	Mkdir                   // mkdir(Path, Mode)
	Rmdir                   // rmdir(Path)
	Link                    // link(Path, Path2)
	Symlink                 // symlink(Target, Path)
	Mkfifo                  // mknod(Path, S_IFIFO|Mode)
	Setxattr                // lsetxattr(Path, Name, Data)
	Removexattr             // lremovexattr(Path, Name)
	Fallocate               // fallocate(open(Path, O_WRONLY), 0, Off, Len)
	numKinds
)

var kindNames = [...]string{
	Create: "create", Write: "write", Truncate: "truncate", Chmod: "chmod",
	Chown: "chown", Utimes: "utimes", Rename: "rename", Unlink: "unlink",
	Mkdir: "mkdir", Rmdir: "rmdir", Link: "link", Symlink: "symlink",
	Mkfifo: "mkfifo", Setxattr: "setxattr", Removexattr: "removexattr",
	Fallocate: "fallocate",
}

func (k Kind) String() string {
	if int(k) < len(kindNames) {
		return kindNames[k]
	}
	return fmt.Sprintf("kind(%d)", k)
}

// Op is one filesystem operation. Which fields matter depends on Kind.
type Op struct {
	Kind   Kind
	Path   string // the object operated on (for Symlink, the new link)
	Path2  string // Rename and Link: the new name
	Target string // Symlink: the link's content
	Data   []byte // Create, Write: bytes written; Setxattr: the value
	Off    int64  // Write: offset; Truncate: new size; Fallocate: offset
	Len    int64  // Fallocate: length
	Flags  int    // Write: extra open flags (O_APPEND, O_TRUNC)
	Mode   uint32 // Create, Chmod, Mkdir, Mkfifo: permission bits
	UID    int    // Chown
	GID    int    // Chown
	Time   int64  // Utimes: seconds since the epoch, for atime and mtime
	Name   string // Setxattr, Removexattr: attribute name
}

// String renders op as a line a person can replay by hand.
func (op Op) String() string {
	switch op.Kind {
	case Create:
		return fmt.Sprintf("create %s mode=%#o data=%q", op.Path, op.Mode, short(op.Data))
	case Write:
		fl := ""
		if op.Flags&unix.O_APPEND != 0 {
			fl += " O_APPEND"
		}
		if op.Flags&unix.O_TRUNC != 0 {
			fl += " O_TRUNC"
		}
		return fmt.Sprintf("write %s off=%d%s data=%q", op.Path, op.Off, fl, short(op.Data))
	case Truncate:
		return fmt.Sprintf("truncate %s %d", op.Path, op.Off)
	case Chmod, Mkdir, Mkfifo:
		return fmt.Sprintf("%s %s %#o", op.Kind, op.Path, op.Mode)
	case Chown:
		return fmt.Sprintf("chown %s %d:%d", op.Path, op.UID, op.GID)
	case Utimes:
		return fmt.Sprintf("utimes %s %d", op.Path, op.Time)
	case Rename, Link:
		return fmt.Sprintf("%s %s %s", op.Kind, op.Path, op.Path2)
	case Symlink:
		return fmt.Sprintf("symlink %q %s", op.Target, op.Path)
	case Setxattr:
		return fmt.Sprintf("setxattr %s %s=%q", op.Path, op.Name, op.Data)
	case Removexattr:
		return fmt.Sprintf("removexattr %s %s", op.Path, op.Name)
	case Fallocate:
		return fmt.Sprintf("fallocate %s off=%d len=%d", op.Path, op.Off, op.Len)
	}
	return fmt.Sprintf("%s %s", op.Kind, op.Path)
}

func short(b []byte) string {
	if len(b) > 24 {
		return fmt.Sprintf("%s...(%d bytes)", b[:24], len(b))
	}
	return string(b)
}

// Apply performs op on the tree at root and returns its outcome: 0 on
// success, else the errno of the first system call that failed.
func Apply(root string, op Op) unix.Errno {
	return errnoOf(apply(root, op))
}

func apply(root string, op Op) error {
	p := filepath.Join(root, op.Path)
	switch op.Kind {
	case Create:
		fd, err := unix.Open(p, unix.O_CREAT|unix.O_EXCL|unix.O_WRONLY|unix.O_CLOEXEC|unix.O_NONBLOCK, op.Mode)
		if err != nil {
			return err
		}
		return writeClose(fd, op.Data, 0, false)
	case Write:
		// O_NONBLOCK: a fifo without a reader fails with ENXIO instead
		// of blocking; regular files ignore it.
		fd, err := unix.Open(p, unix.O_WRONLY|unix.O_CLOEXEC|unix.O_NONBLOCK|op.Flags, 0)
		if err != nil {
			return err
		}
		return writeClose(fd, op.Data, op.Off, op.Flags&unix.O_APPEND != 0)
	case Truncate:
		return unix.Truncate(p, op.Off)
	case Chmod:
		return unix.Chmod(p, op.Mode)
	case Chown:
		return unix.Lchown(p, op.UID, op.GID)
	case Utimes:
		ts := unix.NsecToTimespec(op.Time * 1e9)
		return unix.UtimesNanoAt(unix.AT_FDCWD, p, []unix.Timespec{ts, ts}, unix.AT_SYMLINK_NOFOLLOW)
	case Rename:
		return unix.Rename(p, filepath.Join(root, op.Path2))
	case Unlink:
		return unix.Unlink(p)
	case Mkdir:
		return unix.Mkdir(p, op.Mode)
	case Rmdir:
		return unix.Rmdir(p)
	case Link:
		return unix.Link(p, filepath.Join(root, op.Path2))
	case Symlink:
		return unix.Symlink(op.Target, p)
	case Mkfifo:
		return unix.Mknod(p, unix.S_IFIFO|op.Mode, 0)
	case Setxattr:
		return unix.Lsetxattr(p, op.Name, op.Data, 0)
	case Removexattr:
		return unix.Lremovexattr(p, op.Name)
	case Fallocate:
		fd, err := unix.Open(p, unix.O_WRONLY|unix.O_CLOEXEC|unix.O_NONBLOCK, 0)
		if err != nil {
			return err
		}
		err = unix.Fallocate(fd, 0, op.Off, op.Len)
		if cerr := unix.Close(fd); err == nil {
			err = cerr
		}
		return err
	}
	return unix.ENOSYS
}

func writeClose(fd int, data []byte, off int64, appendMode bool) error {
	var err error
	for len(data) > 0 && err == nil {
		var n int
		if appendMode {
			n, err = unix.Write(fd, data)
		} else {
			n, err = unix.Pwrite(fd, data, off)
		}
		data = data[n:]
		off += int64(n)
	}
	if cerr := unix.Close(fd); err == nil {
		err = cerr
	}
	return err
}

// errnoOf reduces err to its errno: 0 for nil, EIO for an error that
// carries none (which Apply's system calls never return).
func errnoOf(err error) unix.Errno {
	if err == nil {
		return 0
	}
	var e unix.Errno
	if errors.As(err, &e) {
		return e
	}
	return unix.EIO
}

// ErrnoName is e as its symbolic name (ENOENT), "ok" for 0.
func ErrnoName(e unix.Errno) string {
	if e == 0 {
		return "ok"
	}
	if n := unix.ErrnoName(e); n != "" {
		return n
	}
	return fmt.Sprintf("errno(%d)", int(e))
}

// Clean checks that p is a relative path inside a tree: no "..", not
// absolute. Generators and decoders only make such paths; Clean is for
// hand-written ones.
func Clean(p string) (string, error) {
	c := filepath.Clean(p)
	if filepath.IsAbs(c) || c == ".." || strings.HasPrefix(c, "../") {
		return "", fmt.Errorf("path %q leaves the tree", p)
	}
	return c, nil
}

// Exists reports whether name exists (without following a final symlink).
func Exists(name string) bool {
	_, err := os.Lstat(name)
	return err == nil
}
