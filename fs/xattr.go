package fs

import (
	"context"
	"strings"
	"syscall"

	gofs "github.com/hanwen/go-fuse/v2/fs"
	"golang.org/x/sys/unix"

	"github.com/lamina-project/lamina/cow"
)

// Extended attributes pass through to the object's current real copy,
// except overlay's own in the union's namespace (trusted.overlay.* as
// root), which describe the layers and are hidden. A user's own names in
// that namespace are stored escaped (trusted.overlay.overlay.*), as kernel
// overlay does, so overlays nest.

var (
	_ = (gofs.NodeGetxattrer)((*node)(nil))
	_ = (gofs.NodeSetxattrer)((*node)(nil))
	_ = (gofs.NodeRemovexattrer)((*node)(nil))
	_ = (gofs.NodeListxattrer)((*node)(nil))
)

// Getxattr implements gofs.NodeGetxattrer.
func (n *node) Getxattr(ctx context.Context, attr string, dest []byte) (uint32, syscall.Errno) {
	name := n.u.ns.Escape(attr)
	var sz int
	var err error
	if n.withUpperFd(nil, func(fd int) {
		// The kernel asks for security.capability before every first
		// write and chown: an open file answers without a path walk.
		sz, err = unix.Fgetxattr(fd, name, dest)
	}) {
		if err != nil {
			return 0, gofs.ToErrno(err)
		}
		return uint32(sz), 0
	}
	n.u.mu.RLock()
	p := n.realPath()
	n.u.mu.RUnlock()
	sz, err = unix.Lgetxattr(p, name, dest)
	if err != nil {
		return 0, gofs.ToErrno(err)
	}
	return uint32(sz), 0
}

// Listxattr implements gofs.NodeListxattrer.
func (n *node) Listxattr(ctx context.Context, dest []byte) (uint32, syscall.Errno) {
	n.u.mu.RLock()
	p := n.realPath()
	n.u.mu.RUnlock()
	names, err := cow.ListXattrs(p)
	if err != nil {
		return 0, gofs.ToErrno(err)
	}
	var b strings.Builder
	for _, name := range names {
		name, ok := n.u.ns.Unescape(name)
		if !ok {
			continue
		}
		b.WriteString(name)
		b.WriteByte(0)
	}
	if len(dest) == 0 {
		return uint32(b.Len()), 0
	}
	if b.Len() > len(dest) {
		return 0, syscall.ERANGE
	}
	return uint32(copy(dest, b.String())), 0
}

// Setxattr implements gofs.NodeSetxattrer.
func (n *node) Setxattr(ctx context.Context, attr string, data []byte, flags uint32) syscall.Errno {
	return n.changeXattr(func(p string) error { return unix.Lsetxattr(p, n.u.ns.Escape(attr), data, int(flags)) })
}

// Removexattr implements gofs.NodeRemovexattrer.
func (n *node) Removexattr(ctx context.Context, attr string) syscall.Errno {
	return n.changeXattr(func(p string) error { return unix.Lremovexattr(p, n.u.ns.Escape(attr)) })
}

// changeXattr copies n up and applies change to the upper copy.
func (n *node) changeXattr(change func(p string) error) syscall.Errno {
	u := n.u
	if u.readOnly() {
		return syscall.EROFS
	}
	defer u.beginChange(n, false)()
	if errno := u.copyUp(n, false); errno != 0 {
		return errno
	}
	return errnoOf(change(u.upperPath(n.rel())))
}
