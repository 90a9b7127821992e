package runtime

import (
	"fmt"
	"io"
	"os"

	"golang.org/x/sys/unix"
)

// sealedExe returns a sealed in-memory copy of the running binary. Init
// and exec run from it, so a process in the container that opens
// /proc/<pid>/exe for writing (CVE-2019-5736) reaches a sealed memfd, never
// the lamina binary on the host.
func sealedExe() (*os.File, error) {
	src, err := os.Open("/proc/self/exe")
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
