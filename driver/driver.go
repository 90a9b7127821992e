// Package driver mounts a union of layer directories with one of several
// implementations: laminafs, kernel overlay, fuse-overlayfs, or any binary
// that takes fuse-overlayfs's command line. Every driver reads and writes
// the same on-disk format (kernel overlay's), so the same directories can be
// mounted by each in turn: that is what makes differential tests, fair
// benchmarks and a storage-driver fallback possible.
//
// It follows containerd's snapshotter shape: one narrow interface, one
// implementation per backend, and one shared test suite they all pass.
package driver

import (
	"errors"
	"fmt"
	"strings"
)

// Layers is the set of directories a union is made of. Lower[0] is the top
// of the read-only stack, as in overlay's lowerdir option. With no Upper the
// union is read-only.
type Layers struct {
	Lower []string
	Upper string
	Work  string
}

// ReadOnly reports whether the union has no upper layer.
func (l Layers) ReadOnly() bool { return l.Upper == "" }

// Validate checks the shape of l, not the directories themselves.
func (l Layers) Validate() error {
	if len(l.Lower) == 0 && l.Upper == "" {
		return errors.New("no layers: need at least one lowerdir or an upperdir")
	}
	if (l.Upper == "") != (l.Work == "") {
		return errors.New("upperdir and workdir go together")
	}
	for _, d := range l.Lower {
		if d == "" {
			return errors.New("empty lowerdir")
		}
	}
	return nil
}

// Options renders l as fuse-overlayfs / overlay mount options. Colons and
// commas inside paths are escaped with a backslash, as overlay does.
func (l Layers) Options() string {
	var opts []string
	if len(l.Lower) > 0 {
		esc := make([]string, len(l.Lower))
		for i, d := range l.Lower {
			esc[i] = escape(d)
		}
		opts = append(opts, "lowerdir="+strings.Join(esc, ":"))
	}
	if l.Upper != "" {
		opts = append(opts, "upperdir="+escape(l.Upper), "workdir="+escape(l.Work))
	}
	return strings.Join(opts, ",")
}

func escape(p string) string {
	p = strings.ReplaceAll(p, `\`, `\\`)
	p = strings.ReplaceAll(p, ":", `\:`)
	return strings.ReplaceAll(p, ",", `\,`)
}

// Driver mounts unions of Layers.
type Driver interface {
	// Name is the driver's name as users type it (laminafs, overlay, ...).
	Name() string
	// Available returns nil when the driver can be used on this machine,
	// else why not (binary not installed, no /dev/fuse, not root).
	Available() error
	// Mount makes the union of l visible at target, which must exist.
	Mount(l Layers, target string) (Mount, error)
}

// Mount is a mounted union.
type Mount interface {
	// Target is the directory the union is mounted on.
	Target() string
	// Unmount removes the mount and, for FUSE drivers, waits until the
	// serving process has gone. It is safe to call more than once.
	Unmount() error
}

// ErrUnavailable is wrapped by Available's errors.
var ErrUnavailable = errors.New("driver unavailable")

func unavailable(name, why string) error {
	return fmt.Errorf("%s: %s: %w", name, why, ErrUnavailable)
}
