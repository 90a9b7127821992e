package fs

import (
	"fmt"
	"syscall"
	"time"

	gofs "github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
	"golang.org/x/sys/unix"
)

// MountOptions tune how the union is served.
type MountOptions struct {
	// AllowOther lets users other than the mounter in (on by default as
	// root, as fuse-overlayfs does, or every test that switches user
	// fails). Permission checks are the kernel's (default_permissions)
	// on the attributes the union shows.
	AllowOther bool
	// ReadOnly mounts read-only even with an upper layer.
	ReadOnly bool
	// NoPassthrough turns FUSE passthrough off (for A/B measurements).
	NoPassthrough bool
	// CacheTimeout is how long the kernel may cache entries and
	// attributes. laminafs is the only writer of its layers, so this can
	// be long; zero means one hour.
	CacheTimeout time.Duration
	// HugeHeapNow backs the server's heap with huge pages from the start
	// rather than once the union has a thousand nodes (see hugeheap.New):
	// for a standalone server, which lives long and may be walked at once;
	// not for a short container's, whose start it would slow.
	HugeHeapNow bool
	// Debug logs every FUSE request.
	Debug bool
	// FsName is shown as the mount's source in /proc/mounts.
	FsName string
	// Warm lists paths (slash-separated, from the union's root) that a
	// client is about to look up: the lower listings of the directories
	// along them are read on a goroutine from the start, so that the
	// first lookups find them ready (a container's start: its mount
	// points and its command).
	Warm []string
}

// startBurst is the number of a union's first requests that get a spare
// reader: for a container's start (MountOptions.Warm), about what a
// busybox container's start sends (twenty), with room for a larger
// image's; none for a standalone server.
func startBurst(opts MountOptions) int {
	if len(opts.Warm) == 0 {
		return 0
	}
	return 32
}

// Mount serves the union cfg at target until it is unmounted. The server
// runs in the background; call Wait on it to block until unmounted.
func Mount(target string, cfg Config, opts MountOptions) (*fuse.Server, error) {
	u, err := newUnion(cfg, opts)
	if err != nil {
		return nil, err
	}
	if len(opts.Warm) > 0 {
		go u.warm(opts.Warm)
	}
	var st unix.Stat_t
	if err := unix.Stat(target, &st); err != nil {
		return nil, fmt.Errorf("mountpoint %s: %w", target, err)
	}
	if st.Mode&unix.S_IFMT != unix.S_IFDIR {
		return nil, fmt.Errorf("mountpoint %s: %w", target, syscall.ENOTDIR)
	}
	root := &node{u: u, upper: u.upper != "", ino: 1}
	if root.upper && u.ns.IsOpaque(u.upper) {
		root.opaque = true
	} else {
		for j, l := range u.lowers {
			root.dirLowers = append(root.dirLowers, src{layer: j})
			if l.dir("").opaque {
				break
			}
		}
	}
	u.root = root
	// Objects are created with exactly the mode the caller asked for
	// (the kernel already applied the caller's umask).
	unix.Umask(0)

	timeout := opts.CacheTimeout
	if timeout == 0 {
		timeout = time.Hour
	}
	fsOpts := &gofs.Options{
		EntryTimeout:    &timeout,
		AttrTimeout:     &timeout,
		NegativeTimeout: &timeout,
		// Modes are the layers' own: go-fuse would otherwise show a file
		// with no permission bits (mode 000) as 0644.
		NullPermissions: true,
		MountOptions: fuse.MountOptions{
			AllowOther:  opts.AllowOther,
			FsName:      opts.FsName,
			Name:        "laminafs",
			DirectMount: true,
			Debug:       opts.Debug,
			MaxWrite:    1 << 20,
			// One goroutine reads and answers requests in turn, as a
			// single-threaded libfuse server does: a serial client's
			// round trip then wakes one thread, not two, which halves
			// its cost here (research/gofuse-tuning.md). Handlers that
			// may block for long hand reading on first (u.mayBlock).
			InlineReader: true,
			// A container's start (Warm) opens with lookups from several
			// of its init's threads at once: those are answered by two
			// readers (fuse.MountOptions.InlineBurst).
			InlineBurst: startBurst(opts),
			// This process never opens files on its own mount, and one
			// killed with such a file open could never exit (LAMINA.md).
			NoPollHack: true,
			// The server clears set-id bits itself (it changes the layers
			// as root, so the kernel's own rules for chown, truncate and
			// write apply there; see killSuidgid), which spares the
			// kernel a GETATTR before every chown (untar: one request in
			// ten).
			ExtraCapabilities: fuse.CAP_HANDLE_KILLPRIV_V2,
			// A symlink's target never changes in place (a new one is a
			// new inode), so the kernel may keep what it read.
			EnableSymlinkCaching: true,
			Options:              []string{"default_permissions", "suid", "dev"},
		},
	}
	if fsOpts.FsName == "" {
		fsOpts.FsName = "laminafs"
	}
	if opts.ReadOnly || u.readOnly() {
		fsOpts.Options = append(fsOpts.Options, "ro")
	}
	if opts.NoPassthrough {
		fsOpts.DisabledCapabilities |= fuse.CAP_PASSTHROUGH
	}
	srv, err := gofs.Mount(target, root, fsOpts)
	if err != nil {
		return nil, fmt.Errorf("mount %s: %w", target, err)
	}
	u.server.Store(srv)
	return srv, nil
}
