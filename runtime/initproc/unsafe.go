package initproc

import (
	"fmt"
	"unsafe"

	"golang.org/x/sys/unix"
)

// uintptrOf passes a slice to a raw syscall.
func uintptrOf(s []uint32) uintptr { return uintptr(unsafe.Pointer(&s[0])) }

// defaultSignal sets sig's disposition to SIG_DFL with a raw rt_sigaction,
// behind the Go runtime's back: os/signal would start a goroutine and
// threads, which a container's pids limit may refuse this late. Only for
// just before execve. The zeroed struct is the kernel's sigaction with a
// SIG_DFL handler, no flags and an empty mask, on every 64-bit arch.
func defaultSignal(sig unix.Signal) error {
	var sa [4]uint64
	if _, _, e := unix.RawSyscall6(unix.SYS_RT_SIGACTION, uintptr(sig), uintptr(unsafe.Pointer(&sa[0])), 0, 8, 0, 0); e != 0 {
		return fmt.Errorf("reset %v: %w", sig, e)
	}
	return nil
}
