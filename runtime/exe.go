package runtime

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"golang.org/x/sys/unix"
)

// sealedExe returns the running binary in a form that cannot be written
// to. Init and exec run from it, so a process in the container that opens
// /proc/<pid>/exe for writing (CVE-2019-5736) never reaches the lamina
// binary on the host.
//
// The binary is opened through a private read-only overlay mount, as runc
// does since 1.2: no copy, a fraction of a millisecond. Where that cannot
// be had (not root, no overlayfs or new mount API, the binary's directory
// overlapping the other layer) it is copied into a sealed memfd, which
// costs about a millisecond per MB of binary.
func sealedExe() (*os.File, error) {
	bin, err := os.Readlink("/proc/self/exe")
	if err != nil {
		return nil, fmt.Errorf("sealed exe: %w", err)
	}
	// A replaced or deleted binary reads as "path (deleted)": only the
	// memfd copy can seal what is no longer at its path.
	if !strings.HasSuffix(bin, " (deleted)") {
		if f, err := overlayOpen(bin, true); err == nil {
			return f, nil
		}
	}
	return memfdCopy("/proc/self/exe")
}

// initBinary is the name of the container init binary (cmd/lamina-init)
// the monitor looks for next to its own.
const initBinary = "lamina-init"

// sealedInit returns, sealed as sealedExe's, the binary a container's init
// runs from: lamina-init (the C init, which takes the flat bootstrap: flat
// is true) when it is installed next to the running binary, else the
// running binary itself (which runs init as InitCommand).
func sealedInit() (f *os.File, flat bool, err error) {
	bin, err := os.Readlink("/proc/self/exe")
	if err != nil || strings.HasSuffix(bin, " (deleted)") {
		f, err := sealedExe()
		return f, false, err
	}
	return sealedInitIn(filepath.Dir(bin))
}

// sealedInitIn is sealedInit with lamina-init looked for in dir.
func sealedInitIn(dir string) (*os.File, bool, error) {
	p := filepath.Join(dir, initBinary)
	if fi, err := os.Stat(p); err == nil && fi.Mode().IsRegular() {
		if f, err := overlayOpen(p, false); err == nil {
			return f, true, nil
		}
		if f, err := memfdCopy(p); err == nil {
			return f, true, nil
		}
	}
	f, err := sealedExe()
	return f, false, err
}

// overlayEmpty is the second, empty lower layer overlayOpen needs: an
// overlay without an upper layer takes at least two lower ones, and only
// then refuses every write. It must not overlap the binary's directory.
const overlayEmpty = "/run/lamina/empty"

// overlayOpen opens the binary at bin through an overlay of its directory
// and overlayEmpty, mounted read-only with the new mount API and never
// attached anywhere: no mount namespace has it, nobody can remount it
// read-write, and the overlay has no upper layer to write into. The
// returned O_PATH descriptor can be exec'd through /proc/self/fd. self
// says bin is the running binary, which the opened file must still be.
func overlayOpen(bin string, self bool) (*os.File, error) {
	if err := os.MkdirAll(overlayEmpty, 0o700); err != nil {
		return nil, err
	}
	ctx, err := unix.Fsopen("overlay", unix.FSOPEN_CLOEXEC)
	if err != nil {
		return nil, err
	}
	defer unix.Close(ctx)
	dir, name := filepath.Split(bin)
	// The binary's directory on top, so that nothing in the empty layer
	// can stand in for it.
	escape := strings.NewReplacer(`\`, `\\`, `:`, `\:`)
	if err := unix.FsconfigSetString(ctx, "lowerdir", escape.Replace(dir)+":"+overlayEmpty); err != nil {
		return nil, err
	}
	// xino is of no use here and only logs warnings across filesystems.
	_ = unix.FsconfigSetString(ctx, "xino", "off")
	if err := unix.FsconfigCreate(ctx); err != nil {
		return nil, err
	}
	mnt, err := unix.Fsmount(ctx, unix.FSMOUNT_CLOEXEC, unix.MOUNT_ATTR_RDONLY|unix.MOUNT_ATTR_NODEV|unix.MOUNT_ATTR_NOSUID)
	if err != nil {
		return nil, err
	}
	defer unix.Close(mnt)
	fd, err := unix.Openat(mnt, name, unix.O_PATH|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, err
	}
	f := os.NewFile(uintptr(fd), "lamina-sealed")
	// What the overlay shows is the file in the directory: not the binary
	// when the binary is a file bind-mounted over another (a lower layer
	// does not cross mounts), or was replaced meanwhile. Without xino the
	// overlay passes a lower file's inode number and times through.
	want := bin
	if self {
		want = "/proc/self/exe"
	}
	var got, orig unix.Stat_t
	if err := unix.Fstat(fd, &got); err != nil {
		f.Close()
		return nil, err
	}
	if err := unix.Stat(want, &orig); err != nil || !sameFile(&got, &orig) {
		f.Close()
		return nil, errors.New("the overlay does not show the binary")
	}
	return f, nil
}

// sameFile reports whether a and b are the same file's attributes, seen
// through different mounts.
func sameFile(a, b *unix.Stat_t) bool {
	return a.Ino == b.Ino && a.Size == b.Size && a.Mtim == b.Mtim && a.Ctim == b.Ctim
}

// memfdCopy returns a sealed in-memory copy of the binary at path.
func memfdCopy(path string) (*os.File, error) {
	src, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("sealed exe: %w", err)
	}
	defer src.Close()
	fd, err := unix.MemfdCreate("lamina", unix.MFD_CLOEXEC|unix.MFD_ALLOW_SEALING)
	if err != nil {
		return nil, fmt.Errorf("sealed exe: memfd: %w", err)
	}
	f := os.NewFile(uintptr(fd), "lamina-sealed")
	if _, err := io.Copy(f, src); err != nil {
		f.Close()
		return nil, fmt.Errorf("sealed exe: copy: %w", err)
	}
	seals := unix.F_SEAL_SEAL | unix.F_SEAL_SHRINK | unix.F_SEAL_GROW | unix.F_SEAL_WRITE
	if _, err := unix.FcntlInt(f.Fd(), unix.F_ADD_SEALS, seals); err != nil {
		f.Close()
		return nil, fmt.Errorf("sealed exe: seal: %w", err)
	}
	return f, nil
}
