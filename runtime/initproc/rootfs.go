package initproc

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	securejoin "github.com/cyphar/filepath-securejoin"
	"github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"
)

// The root filesystem is built in runc's order: make the host's mounts
// slave so nothing propagates back, bind the rootfs onto itself (pivot_root
// needs a mount point), mount what the spec lists with every target
// resolved inside the rootfs, populate /dev, pivot_root, then the
// read-only remounts and masks that must happen after pivot.

var mountFlags = map[string]struct {
	clear bool
	flag  uintptr
}{
	"ro": {false, unix.MS_RDONLY}, "rw": {true, unix.MS_RDONLY},
	"nosuid": {false, unix.MS_NOSUID}, "suid": {true, unix.MS_NOSUID},
	"nodev": {false, unix.MS_NODEV}, "dev": {true, unix.MS_NODEV},
	"noexec": {false, unix.MS_NOEXEC}, "exec": {true, unix.MS_NOEXEC},
	"sync": {false, unix.MS_SYNCHRONOUS}, "async": {true, unix.MS_SYNCHRONOUS},
	"noatime": {false, unix.MS_NOATIME}, "atime": {true, unix.MS_NOATIME},
	"nodiratime": {false, unix.MS_NODIRATIME}, "diratime": {true, unix.MS_NODIRATIME},
	"relatime": {false, unix.MS_RELATIME}, "norelatime": {true, unix.MS_RELATIME},
	"strictatime": {false, unix.MS_STRICTATIME}, "nostrictatime": {true, unix.MS_STRICTATIME},
	"bind": {false, unix.MS_BIND}, "rbind": {false, unix.MS_BIND | unix.MS_REC},
	"remount": {false, unix.MS_REMOUNT}, "defaults": {false, 0},
}

var propagationFlags = map[string]uintptr{
	"private": unix.MS_PRIVATE, "rprivate": unix.MS_PRIVATE | unix.MS_REC,
	"slave": unix.MS_SLAVE, "rslave": unix.MS_SLAVE | unix.MS_REC,
	"shared": unix.MS_SHARED, "rshared": unix.MS_SHARED | unix.MS_REC,
	"unbindable": unix.MS_UNBINDABLE, "runbindable": unix.MS_UNBINDABLE | unix.MS_REC,
}

// parseMountOptions splits OCI mount options into flags, propagation flags
// and the filesystem's data string.
func parseMountOptions(opts []string) (flags uintptr, prop []uintptr, data string) {
	var d []string
	for _, o := range opts {
		if f, ok := mountFlags[o]; ok {
			if f.clear {
				flags &^= f.flag
			} else {
				flags |= f.flag
			}
			continue
		}
		if p, ok := propagationFlags[o]; ok {
			prop = append(prop, p)
			continue
		}
		d = append(d, o)
	}
	return flags, prop, strings.Join(d, ",")
}

// prepareRootfs does everything up to and including pivot_root.
func prepareRootfs(spec *specs.Spec) error {
	rootfs := spec.Root.Path
	if err := unix.Mount("", "/", "", unix.MS_SLAVE|unix.MS_REC, ""); err != nil {
		return fmt.Errorf("make / rslave: %w", err)
	}
	if err := unix.Mount(rootfs, rootfs, "", unix.MS_BIND|unix.MS_REC, ""); err != nil {
		return fmt.Errorf("bind rootfs onto itself: %w", err)
	}
	// A private rootfs keeps the container's mounts out of the host's
	// mount tree and lets pivot_root work when / is shared.
	if err := unix.Mount("", rootfs, "", unix.MS_PRIVATE, ""); err != nil {
		return fmt.Errorf("make rootfs private: %w", err)
	}
	for _, m := range spec.Mounts {
		if err := mountInRoot(rootfs, m); err != nil {
			return err
		}
	}
	if err := setupDev(rootfs, spec.Process != nil && spec.Process.Terminal); err != nil {
		return err
	}
	return pivotRoot(rootfs)
}

// mountInRoot mounts m below rootfs. The destination is resolved inside
// the rootfs (symlinks in the image cannot point a mount at the host).
func mountInRoot(rootfs string, m specs.Mount) error {
	// procfs and sysfs only on real directories: an image whose /proc is
	// a symlink would otherwise get the masks and read-only remounts,
	// which are done by path, applied somewhere else (CVE-2019-19921).
	if m.Type == "proc" || m.Type == "sysfs" {
		if fi, err := os.Lstat(filepath.Join(rootfs, m.Destination)); err == nil && !fi.IsDir() {
			return fmt.Errorf("cannot mount %s on %s: not a directory in the image", m.Type, m.Destination)
		}
	}
	dest, err := securejoin.SecureJoin(rootfs, m.Destination)
	if err != nil {
		return fmt.Errorf("resolve mount %s: %w", m.Destination, err)
	}
	flags, prop, data := parseMountOptions(m.Options)
	if m.Type == "cgroup" {
		if err := os.MkdirAll(dest, 0o755); err != nil {
			return fmt.Errorf("mount point %s: %w", m.Destination, err)
		}
		return mountCgroups(dest, flags)
	}
	isBind := m.Type == "bind" || flags&unix.MS_BIND != 0
	if err := makeMountpoint(dest, m, isBind); err != nil {
		return err
	}
	// Re-resolve: creating the mount point may have followed nothing, but
	// the path must still be inside the root now that it exists.
	if dest, err = securejoin.SecureJoin(rootfs, m.Destination); err != nil {
		return fmt.Errorf("resolve mount %s: %w", m.Destination, err)
	}
	if isBind {
		if err := unix.Mount(m.Source, dest, "", flags&(unix.MS_BIND|unix.MS_REC), ""); err != nil {
			return fmt.Errorf("bind mount %s on %s: %w", m.Source, m.Destination, err)
		}
		// Flags other than bind/rec only take effect on a remount.
		if rest := flags &^ (unix.MS_BIND | unix.MS_REC); rest != 0 {
			if err := unix.Mount("", dest, "", rest|unix.MS_BIND|unix.MS_REMOUNT, ""); err != nil {
				return fmt.Errorf("remount %s: %w", m.Destination, err)
			}
		}
	} else {
		ro := flags & unix.MS_RDONLY
		if m.Type == "sysfs" || m.Type == "proc" {
			ro = 0 // remounted read-only below: some kernels refuse ro at mount time
		}
		if err := unix.Mount(m.Source, dest, m.Type, flags&^unix.MS_RDONLY|ro, data); err != nil {
			return fmt.Errorf("mount %s on %s: %w", m.Type, m.Destination, err)
		}
		if flags&unix.MS_RDONLY != 0 && ro == 0 {
			if err := unix.Mount("", dest, "", flags|unix.MS_REMOUNT, data); err != nil {
				return fmt.Errorf("remount %s read-only: %w", m.Destination, err)
			}
		}
	}
	for _, p := range prop {
		if err := unix.Mount("", dest, "", p, ""); err != nil {
			return fmt.Errorf("mount propagation of %s: %w", m.Destination, err)
		}
	}
	return nil
}

// makeMountpoint creates m's mount point at dest (resolved in the root) if
// the image lacks it: a file for a file bind mount, else a directory.
func makeMountpoint(dest string, m specs.Mount, isBind bool) error {
	var err error
	if isBind {
		fi, serr := os.Stat(m.Source)
		if serr != nil {
			return fmt.Errorf("bind mount source %s: %w", m.Source, serr)
		}
		if fi.IsDir() {
			err = os.MkdirAll(dest, 0o755)
		} else {
			err = mkfile(dest)
		}
	} else {
		err = os.MkdirAll(dest, 0o755)
	}
	if err != nil {
		return fmt.Errorf("mount point %s: %w", m.Destination, err)
	}
	return nil
}

func mkfile(p string) error {
	if _, err := os.Stat(p); err == nil {
		return nil
	}
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		return err
	}
	f, err := os.OpenFile(p, os.O_CREATE|os.O_WRONLY, 0o644)
	if err != nil {
		return err
	}
	return f.Close()
}

// devices docker gives every container.
var defaultDevices = []struct {
	name         string
	major, minor uint32
}{
	{"null", 1, 3}, {"zero", 1, 5}, {"full", 1, 7},
	{"random", 1, 8}, {"urandom", 1, 9}, {"tty", 5, 0},
}

// setupDev fills the container's /dev tmpfs: device nodes, the standard
// symlinks, and /dev/ptmx pointing at the container's own devpts.
func setupDev(rootfs string, terminal bool) error {
	dev := filepath.Join(rootfs, "dev")
	old := unix.Umask(0)
	defer unix.Umask(old)
	for _, d := range defaultDevices {
		p := filepath.Join(dev, d.name)
		if err := unix.Mknod(p, unix.S_IFCHR|0o666, int(unix.Mkdev(d.major, d.minor))); err != nil && !errors.Is(err, unix.EEXIST) {
			return fmt.Errorf("mknod /dev/%s: %w", d.name, err)
		}
	}
	links := [][2]string{
		{"/proc/self/fd", "fd"}, {"/proc/self/fd/0", "stdin"},
		{"/proc/self/fd/1", "stdout"}, {"/proc/self/fd/2", "stderr"},
		{"pts/ptmx", "ptmx"}, {"/proc/kcore", "core"},
	}
	for _, l := range links {
		p := filepath.Join(dev, l[1])
		_ = os.Remove(p)
		if err := os.Symlink(l[0], p); err != nil {
			return fmt.Errorf("symlink /dev/%s: %w", l[1], err)
		}
	}
	if terminal {
		if err := mkfile(filepath.Join(dev, "console")); err != nil {
			return fmt.Errorf("/dev/console: %w", err)
		}
	}
	return nil
}

// pivotRoot makes rootfs the root and detaches the old root, as runc does
// with pivot_root(".", "."): no directory for the old root is needed in the
// image.
func pivotRoot(rootfs string) error {
	oldroot, err := unix.Open("/", unix.O_DIRECTORY|unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("open old root: %w", err)
	}
	defer unix.Close(oldroot)
	if err := unix.Chdir(rootfs); err != nil {
		return fmt.Errorf("chdir rootfs: %w", err)
	}
	if err := unix.PivotRoot(".", "."); err != nil {
		return fmt.Errorf("pivot_root: %w", err)
	}
	if err := unix.Fchdir(oldroot); err != nil {
		return fmt.Errorf("fchdir old root: %w", err)
	}
	if err := unix.Mount("", ".", "", unix.MS_SLAVE|unix.MS_REC, ""); err != nil {
		return fmt.Errorf("make old root rslave: %w", err)
	}
	if err := unix.Unmount(".", unix.MNT_DETACH); err != nil {
		return fmt.Errorf("detach old root: %w", err)
	}
	if err := unix.Chdir("/"); err != nil {
		return fmt.Errorf("chdir /: %w", err)
	}
	return nil
}

// finalizeRootfs runs after pivot_root: read-only root, masked paths (a
// file covered by /dev/null, a directory by an empty read-only tmpfs) and
// read-only paths.
func finalizeRootfs(spec *specs.Spec) error {
	if spec.Root.Readonly {
		if err := unix.Mount("", "/", "", unix.MS_BIND|unix.MS_REMOUNT|unix.MS_RDONLY, ""); err != nil {
			return fmt.Errorf("remount / read-only: %w", err)
		}
	}
	if spec.Linux == nil {
		return nil
	}
	for _, p := range spec.Linux.ReadonlyPaths {
		if err := readonlyPath(p); err != nil {
			return err
		}
	}
	for _, p := range spec.Linux.MaskedPaths {
		if err := maskPath(p); err != nil {
			return err
		}
	}
	return nil
}

func readonlyPath(p string) error {
	if err := unix.Mount(p, p, "", unix.MS_BIND|unix.MS_REC, ""); err != nil {
		if errors.Is(err, unix.ENOENT) {
			return nil
		}
		return fmt.Errorf("bind %s: %w", p, err)
	}
	if err := unix.Mount("", p, "", unix.MS_BIND|unix.MS_REMOUNT|unix.MS_RDONLY|unix.MS_NOSUID|unix.MS_NODEV|unix.MS_NOEXEC, ""); err != nil {
		return fmt.Errorf("remount %s read-only: %w", p, err)
	}
	return nil
}

func maskPath(p string) error {
	fi, err := os.Lstat(p)
	if err != nil {
		return nil // nothing to mask
	}
	if fi.IsDir() {
		if err := unix.Mount("tmpfs", p, "tmpfs", unix.MS_RDONLY, ""); err != nil {
			return fmt.Errorf("mask %s: %w", p, err)
		}
		return nil
	}
	if err := unix.Mount("/dev/null", p, "", unix.MS_BIND, ""); err != nil && !errors.Is(err, unix.ENOENT) {
		return fmt.Errorf("mask %s: %w", p, err)
	}
	return nil
}

// mountCgroups gives the container its view of its cgroups at dest, as
// docker does: cgroup2 on a unified host; on a v1 or hybrid host a tmpfs
// with one cgroup mount per hierarchy. Init has unshared its cgroup
// namespace by now, so each shows the container's cgroup as its root.
func mountCgroups(dest string, flags uintptr) error {
	if CgroupV2() {
		if err := unix.Mount("cgroup2", dest, "cgroup2", flags, ""); err != nil {
			return fmt.Errorf("mount cgroup2: %w", err)
		}
		return nil
	}
	ro := flags & unix.MS_RDONLY
	if err := unix.Mount("tmpfs", dest, "tmpfs", (flags&^unix.MS_RDONLY)|unix.MS_NOSUID|unix.MS_NODEV|unix.MS_NOEXEC, "mode=755"); err != nil {
		return fmt.Errorf("mount cgroup tmpfs: %w", err)
	}
	hs, err := cgroupHierarchies()
	if err != nil {
		return err
	}
	for _, h := range hs {
		name, data := h[0], h[1]
		dir := filepath.Join(dest, name)
		if err := os.Mkdir(dir, 0o755); err != nil {
			return fmt.Errorf("cgroup mount point %s: %w", name, err)
		}
		if err := unix.Mount("cgroup", dir, "cgroup", flags|unix.MS_NOSUID|unix.MS_NODEV|unix.MS_NOEXEC, data); err != nil {
			return fmt.Errorf("mount cgroup %s: %w", name, err)
		}
	}
	if ro != 0 {
		if err := unix.Mount("", dest, "", unix.MS_REMOUNT|unix.MS_RDONLY|unix.MS_NOSUID|unix.MS_NODEV|unix.MS_NOEXEC, "mode=755"); err != nil {
			return fmt.Errorf("remount cgroup tmpfs read-only: %w", err)
		}
	}
	return nil
}

// CgroupRoot is where the host's cgroup hierarchies are mounted.
const CgroupRoot = "/sys/fs/cgroup"

// CgroupV2 reports whether the unified hierarchy has the controllers lamina
// needs. On a hybrid host (v1 controllers, an empty unified tree) it does
// not, and v1 is used as docker does.
func CgroupV2() bool {
	b, err := os.ReadFile(filepath.Join(CgroupRoot, "cgroup.controllers"))
	if err != nil {
		return false
	}
	have := strings.Fields(string(b))
	need := map[string]bool{"memory": true, "pids": true, "cpu": true}
	for _, c := range have {
		delete(need, c)
	}
	return len(need) == 0
}
