package runtime

import (
	"errors"
	"fmt"
	"os"
	"path"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/hanwen/go-fuse/v2/fuse"
	"github.com/lamina-project/lamina/driver"
	"github.com/lamina-project/lamina/fs"
	"github.com/lamina-project/lamina/runtime/initproc"
	"github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"
)

// Storage drivers a container can use. The monitor mounts the union when
// the container starts and unmounts it when it stops.
const (
	DriverLaminafs = "laminafs"
	DriverOverlay  = "overlay"
	DriverVFS      = "vfs"
)

// DefaultDriver is laminafs, served by the monitor itself, when FUSE is
// there; else kernel overlay.
func DefaultDriver() string {
	if (laminafs{}).Available() == nil {
		return DriverLaminafs
	}
	return DriverOverlay
}

// CheckDriver rejects a storage driver lamina cannot run containers on.
func CheckDriver(name string) error {
	d, err := storageDriver(name)
	if err != nil {
		return err
	}
	return d.Available()
}

func storageDriver(name string) (driver.Driver, error) {
	switch name {
	case DriverLaminafs:
		return laminafs{}, nil
	case DriverOverlay:
		return driver.Overlay{}, nil
	case DriverVFS:
		return vfs{}, nil
	}
	return nil, fmt.Errorf("storage driver %q is not supported (laminafs, overlay, vfs)", name)
}

// laminafs serves the union from the monitor's own process (fs.Mount), as
// DESIGN.md's process model has it: no laminafs process to start and poll
// for, and the mount lives exactly as long as the container's monitor.
type laminafs struct{}

func (laminafs) Name() string { return DriverLaminafs }

func (laminafs) Available() error {
	if _, err := os.Stat("/dev/fuse"); err != nil {
		return fmt.Errorf("laminafs: no /dev/fuse: %w", driver.ErrUnavailable)
	}
	return nil
}

func (d laminafs) Mount(l driver.Layers, target string) (driver.Mount, error) {
	return d.mountWarm(l, target, nil)
}

// mountWarm is Mount with the lower listings along the paths warm read
// ahead by the server (fs.MountOptions.Warm).
func (laminafs) mountWarm(l driver.Layers, target string, warm []string) (driver.Mount, error) {
	srv, err := fs.Mount(target, fs.Config{Lower: l.Lower, Upper: l.Upper, Work: l.Work},
		fs.MountOptions{AllowOther: os.Geteuid() == 0, FsName: "laminafs", Warm: warm})
	if err != nil {
		return nil, fmt.Errorf("laminafs: %w", err)
	}
	m := &serverMount{srv: srv, target: target, conn: make(chan uint64, 1)}
	// The connection's number, which Unmount may need to abort it, is
	// read from the mount table now rather than on the container's exit.
	go func() { m.conn <- driver.FUSEConnection(target) }()
	return m, nil
}

// serverMount is a union this process serves.
type serverMount struct {
	srv    *fuse.Server
	target string
	conn   chan uint64 // the FUSE connection's number, once read
	once   sync.Once
	err    error // Unmount's
	// settled has the server's end once Unmount has unmounted (Settled).
	settled chan error
}

func (m *serverMount) Target() string { return m.target }

// Relocate tells m its mount point is now target (a directory above it was
// renamed); call it before Unmount, not concurrently.
func (m *serverMount) Relocate(target string) { m.target = target }

// Unmount unmounts the union and returns once it is gone from the mount
// table. The server's end, which follows (its readers see the connection
// close), is waited for in the background, so that a container's exit is
// not held up by it: see Settled.
func (m *serverMount) Unmount() error {
	m.once.Do(func() {
		m.settled = make(chan error, 1)
		if err := unix.Unmount(m.target, 0); err != nil {
			// Busy: detach, so that nothing is left mounted.
			if err := unix.Unmount(m.target, unix.MNT_DETACH); err != nil {
				m.err = fmt.Errorf("unmount %s: %w", m.target, err)
				m.settled <- nil
				return
			}
		}
		go func() { m.settled <- m.serverEnd() }()
	})
	return m.err
}

// Settled waits, after Unmount, for the union's server to end, and
// returns what ending it took that failed.
func (m *serverMount) Settled() error {
	if err := m.Unmount(); err != nil {
		return nil // nothing to wait for: the mount is still there
	}
	err := <-m.settled
	m.settled <- err // for a second caller
	return err
}

// serverEnd waits for the server of an unmounted union to see its
// connection end.
func (m *serverMount) serverEnd() error {
	conn := <-m.conn
	done := make(chan struct{})
	go func() {
		m.srv.Wait()
		close(done)
	}()
	select {
	case <-done:
		return nil
	case <-time.After(abortAfter):
		// The mount is gone, but a process outside the container still
		// holds one of its files (a debugger, lsof, anything that opened
		// /proc/PID/root/...): the kernel keeps the connection, and so
		// this server, alive for it. The container has stopped: end the
		// connection, or the server waits for ever.
		if err := driver.AbortFUSE(conn); err != nil {
			return fmt.Errorf("unmount %s: %w", m.target, err)
		}
		<-done
		return nil
	}
}

// abortAfter is how long an unmounted union's server may take to see
// its connection end before it is aborted.
const abortAfter = 500 * time.Millisecond

// vfs is docker's vfs driver: no union at all. On the container's first
// start the image's layers are merged into its upper directory, a full
// private copy; every start then bind-mounts that copy. It works on any
// filesystem and any kernel, at the price of the copy.
type vfs struct{}

func (vfs) Name() string { return DriverVFS }

func (vfs) Available() error {
	if os.Geteuid() != 0 {
		return fmt.Errorf("vfs: needs root (bind mount): %w", driver.ErrUnavailable)
	}
	return nil
}

func (vfs) Mount(l driver.Layers, target string) (driver.Mount, error) {
	if l.Upper == "" {
		return nil, errors.New("vfs: needs an upper directory")
	}
	// The stamp is written only once the copy is complete, so a crash
	// mid-copy is redone on the next start.
	stamp := filepath.Join(filepath.Dir(l.Upper), "vfs.done")
	if _, err := os.Stat(stamp); err != nil {
		if err := os.RemoveAll(l.Upper); err != nil {
			return nil, fmt.Errorf("vfs: %w", err)
		}
		if err := os.Mkdir(l.Upper, 0o755); err != nil {
			return nil, fmt.Errorf("vfs: %w", err)
		}
		if err := driver.MergeLayers(l.Lower, l.Upper, false); err != nil {
			return nil, fmt.Errorf("vfs: copy layers: %w", err)
		}
		if err := os.WriteFile(stamp, nil, 0o600); err != nil {
			return nil, fmt.Errorf("vfs: %w", err)
		}
	}
	if err := unix.Mount(l.Upper, target, "", unix.MS_BIND, ""); err != nil {
		return nil, fmt.Errorf("vfs: bind %s on %s: %w", l.Upper, target, err)
	}
	return &bindMount{target: target}, nil
}

// bindMount is vfs's mount of a container's copy.
type bindMount struct{ target string }

func (m *bindMount) Target() string { return m.target }

// Relocate is serverMount.Relocate.
func (m *bindMount) Relocate(target string) { m.target = target }

func (m *bindMount) Unmount() error { return unmountAll(m.target) }

// mountRootfs mounts c's union on its merged directory.
func mountRootfs(s *Store, c *Container) (driver.Mount, error) {
	d, err := storageDriver(c.Driver)
	if err != nil {
		return nil, err
	}
	if err := s.EnsureInitLayer(c); err != nil {
		return nil, err
	}
	target := c.File("merged")
	if err := os.MkdirAll(target, 0o755); err != nil {
		return nil, fmt.Errorf("mount point: %w", err)
	}
	// A monitor that was killed may have left its mount behind.
	if err := unmountAll(target); err != nil {
		return nil, err
	}
	var m driver.Mount
	if lf, ok := d.(laminafs); ok {
		m, err = lf.mountWarm(c.Layers, target, startPaths(c.Spec))
	} else {
		m, err = d.Mount(c.Layers, target)
	}
	if err != nil {
		return nil, fmt.Errorf("mount container filesystem: %w", err)
	}
	return m, nil
}

// unmountAll removes every mount stacked on target, including the dead
// FUSE mount a killed monitor leaves (stat on it fails with ENOTCONN, so
// the mount table is not consulted: unmounting until the kernel says
// target is no mount point is the test).
func unmountAll(target string) error {
	for i := 0; i < 16; i++ {
		err := unix.Unmount(target, unix.MNT_DETACH)
		if errors.Is(err, unix.EINVAL) || errors.Is(err, unix.ENOENT) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("unmount %s: %w", target, err)
		}
	}
	return fmt.Errorf("unmount %s: still mounted", target)
}

// aheadPaths are startPaths but those below a mount point (/dev/pts
// below /dev): what init's look-ahead resolves in the root filesystem
// itself (look_ahead in cmd/lamina-init/init.c leaves out the mount
// points below another the same way).
func aheadPaths(spec *specs.Spec) []string {
	var out []string
	for _, p := range startPaths(spec) {
		covered := false
		for _, m := range spec.Mounts {
			d := strings.TrimSuffix(m.Destination, "/")
			if d != "" && strings.HasPrefix(p, d+"/") {
				covered = true
				break
			}
		}
		if !covered {
			out = append(out, p)
		}
	}
	return out
}

// startPaths are the paths a start looks up in the root filesystem first:
// the spec's mount points and the command's candidates along its PATH (as
// init looks them up, see look_ahead in cmd/lamina-init/init.c).
func startPaths(spec *specs.Spec) []string {
	var paths []string
	for _, m := range spec.Mounts {
		paths = append(paths, m.Destination)
	}
	for _, f := range hostFiles {
		paths = append(paths, f.dest)
	}
	if spec.Process == nil || len(spec.Process.Args) == 0 {
		return paths
	}
	argv0 := spec.Process.Args[0]
	if strings.Contains(argv0, "/") {
		return append(paths, argv0)
	}
	for _, dir := range filepath.SplitList(initproc.SearchPath(spec.Process.Env)) {
		if strings.HasPrefix(dir, "/") {
			paths = append(paths, path.Join(dir, argv0))
		}
	}
	return paths
}
