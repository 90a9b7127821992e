package driver

import (
	"fmt"
	"os"
	"strings"
	"sync"

	"golang.org/x/sys/unix"
)

// Overlay is the kernel's overlay filesystem. It needs root (or a user
// namespace) and the overlay module; it is lamina's semantic oracle.
type Overlay struct {
	// Extra options appended to the mount data (for example "index=off").
	Extra []string
}

func (Overlay) Name() string { return "overlay" }

func (Overlay) Available() error {
	if os.Geteuid() != 0 {
		return unavailable("overlay", "needs root")
	}
	b, err := os.ReadFile("/proc/filesystems")
	if err != nil {
		return unavailable("overlay", err.Error())
	}
	if !strings.Contains(string(b), "\toverlay\n") {
		return unavailable("overlay", "kernel has no overlay filesystem")
	}
	return nil
}

func (o Overlay) Mount(l Layers, target string) (Mount, error) {
	if err := l.Validate(); err != nil {
		return nil, fmt.Errorf("overlay mount %s: %w", target, err)
	}
	// Overlay needs two lower layers when there is no upper; a single
	// read-only layer is a read-only bind mount, which shows the same tree.
	if l.ReadOnly() && len(l.Lower) == 1 {
		if err := unix.Mount(l.Lower[0], target, "", unix.MS_BIND, ""); err != nil {
			return nil, fmt.Errorf("bind mount %s on %s: %w", l.Lower[0], target, err)
		}
		if err := unix.Mount("", target, "", unix.MS_BIND|unix.MS_REMOUNT|unix.MS_RDONLY, ""); err != nil {
			_ = unix.Unmount(target, unix.MNT_DETACH)
			return nil, fmt.Errorf("remount %s read-only: %w", target, err)
		}
		return &kernelMount{target: target}, nil
	}
	data := l.Options()
	if len(o.Extra) > 0 {
		data += "," + strings.Join(o.Extra, ",")
	}
	if err := unix.Mount("overlay", target, "overlay", 0, data); err != nil {
		return nil, fmt.Errorf("overlay mount %s (%s): %w", target, data, err)
	}
	return &kernelMount{target: target}, nil
}

// kernelMount is a mount the kernel serves by itself.
type kernelMount struct {
	target string
	once   sync.Once
	err    error
}

func (m *kernelMount) Target() string { return m.target }

// Relocate tells m its mount point is now target (a directory above it was
// renamed, the mount with it), for Unmount; not concurrently with it.
func (m *kernelMount) Relocate(target string) { m.target = target }

func (m *kernelMount) Unmount() error {
	m.once.Do(func() {
		if err := unix.Unmount(m.target, 0); err != nil && err != unix.EINVAL {
			// Busy: detach so nothing is left in the mount table, and
			// tell the caller: until the last user lets go, the layers
			// are still in use by the lingering superblock.
			if err2 := unix.Unmount(m.target, unix.MNT_DETACH); err2 != nil {
				m.err = fmt.Errorf("unmount %s: %w", m.target, err)
			} else {
				m.err = fmt.Errorf("unmount %s: busy, detached lazily: %w", m.target, err)
			}
		}
	})
	return m.err
}
