package initproc

import (
	"encoding/binary"
	"fmt"
	goruntime "runtime"
	"unsafe"

	"golang.org/x/sys/unix"
)

// CheckFilter rejects what is not a whole BPF program the kernel could
// take: a filter is 1 to 4096 instructions of 8 bytes.
func CheckFilter(prog []byte) error {
	if len(prog) == 0 || len(prog)%8 != 0 || len(prog)/8 > unix.BPF_MAXINSNS {
		return fmt.Errorf("seccomp: a filter of %d bytes is no BPF program", len(prog))
	}
	return nil
}

// loadSeccomp installs a compiled filter (compileSeccomp's program) on the
// calling thread and, with TSYNC, on the process's other threads, as
// libseccomp's load did. It does not set no_new_privs: when the container
// wants no_new_privs init sets it itself; otherwise the filter is loaded
// while the thread still has CAP_SYS_ADMIN, before capabilities are
// dropped (runc's "early" seccomp). An empty program loads nothing.
//
// Preconditions: the calling goroutine is locked to the OS thread that will
// execve.
func loadSeccomp(prog []byte) error {
	if len(prog) == 0 {
		return nil
	}
	if err := CheckFilter(prog); err != nil {
		return err
	}
	insns := make([]unix.SockFilter, len(prog)/8)
	for i := range insns {
		b := prog[8*i:]
		insns[i] = unix.SockFilter{Code: binary.NativeEndian.Uint16(b), Jt: b[2], Jf: b[3], K: binary.NativeEndian.Uint32(b[4:])}
	}
	fprog := unix.SockFprog{Len: uint16(len(insns)), Filter: &insns[0]}
	// With TSYNC a thread that cannot take the filter is reported by its
	// id, as a positive return value.
	r, _, e := unix.RawSyscall(unix.SYS_SECCOMP, unix.SECCOMP_SET_MODE_FILTER, unix.SECCOMP_FILTER_FLAG_TSYNC, uintptr(unsafe.Pointer(&fprog)))
	goruntime.KeepAlive(insns)
	if e != 0 {
		return fmt.Errorf("seccomp: load filter: %w", e)
	}
	if r != 0 {
		return fmt.Errorf("seccomp: load filter: thread %d cannot take it", r)
	}
	return nil
}

// addRule adds one syscall's rule. libseccomp ANDs the conditions of a rule
// and rejects two conditions on the same argument; docker's profile uses
// several conditions on one argument to mean OR, so those become one rule
// each, as runc does.
