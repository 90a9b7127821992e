// Package early puts the heap a lamina program starts with on huge pages,
// at the earliest point a Go package can: its initialisation, which the
// linker orders before most others because it imports nothing but
// syscall and unsafe (package hugeheap, which imports it, has the why of
// huge pages and the growth of a server's heap).
//
// The runtime maps its first heap as one 4 MiB chunk (its page
// allocator's unit), 4 MiB aligned, starts allocating at its bottom (or,
// with Go 1.26's randomised heap base, at a random page in it: the
// Makefile builds lamina without it, see there) and goes up. By this
// package's initialisation the runtime and the packages before it have
// touched about 130 pages of the bottom huge page, each a page fault
// taken; the chunk's huge pages from there up are marked MADV_HUGEPAGE,
// so that the first touch of one still untouched (the upper one, as a
// rule) faults in the whole 2 MiB at once. The bottom one keeps its small
// pages (a long-lived process's khugepaged collapses it later).
//
// This was hugeheap's own init. hugeheap imports os, strings and
// x/sys/unix, so the linker ran it after some fifty packages (at 2.0 ms
// of a `lamina run`'s 3.1 ms of initialisation). It also collapsed the
// bottom huge page (MADV_COLLAPSE, which copies what is resident): about
// 0.5 ms here, on the path of every lamina process's start, which cost
// more than the faults it saved once this ran first (three interleaved
// runs of 100 `lamina run --rm`: 0.4-0.9 ms slower with it).
package early

import (
	"syscall"
	"unsafe"
)

const (
	// OffEnv, set to "off", keeps a process's heap on small pages: for
	// A/B measurements, or where memory counts more than speed (a huge
	// page is resident as a whole).
	OffEnv = "LAMINA_HUGEHEAP"
	// HugePage is the x86-64 THP size.
	HugePage = 2 << 20
	// StartChunk is the runtime's unit of heap mapping (pallocChunkBytes).
	StartChunk = 4 << 20

	modePath = "/sys/kernel/mm/transparent_hugepage/enabled"
)

// possible is whether asking for huge pages helps this process (see
// Possible); enabled adds that LAMINA_HUGEHEAP does not turn them off.
// Both are decided once, at initialisation, and never change.
var (
	possible = wanted(readModeAt(modePath), getenv("GODEBUG"))
	enabled  = possible && getenv(OffEnv) != "off"
)

// Possible reports whether huge pages would be asked for, LAMINA_HUGEHEAP
// aside: the THP mode is madvise and GODEBUG does not say disablethp=1.
func Possible() bool { return possible }

// Enabled reports whether this process puts its heap on huge pages.
func Enabled() bool { return enabled }

func init() {
	if enabled {
		StartHuge(uintptr(unsafe.Pointer(new([64]byte))))
	}
}

// StartHuge marks the heap's chunk around address a, from a's huge page
// up, for huge pages (see the package doc). Failure (no THP, a runtime
// that maps its heap otherwise) leaves things as they were.
func StartHuge(a uintptr) {
	lo := a &^ (HugePage - 1)
	end := a&^(StartChunk-1) + StartChunk
	_, _, _ = syscall.Syscall(syscall.SYS_MADVISE, lo, end-lo, syscall.MADV_HUGEPAGE)
}

func getenv(key string) string {
	v, _ := syscall.Getenv(key)
	return v
}

// readModeAt reads the THP mode line at path, "" if there is none. It
// runs at the start of every lamina process, including `lamina exec`'s
// helper, which is in the container's mount namespace by then
// (runtime/nsenter), where the file may be anything a privileged
// container put there: so no blocking open, a regular file only, and a
// bounded read.
func readModeAt(path string) string {
	fd, err := syscall.Open(path, syscall.O_RDONLY|syscall.O_NONBLOCK|syscall.O_CLOEXEC|syscall.O_NOFOLLOW, 0)
	if err != nil {
		return ""
	}
	defer syscall.Close(fd)
	var st syscall.Stat_t
	if syscall.Fstat(fd, &st) != nil || st.Mode&syscall.S_IFMT != syscall.S_IFREG {
		return ""
	}
	var b [128]byte
	n, err := syscall.Read(fd, b[:])
	if err != nil || n <= 0 {
		return ""
	}
	return string(b[:n])
}

// wanted reports whether asking for huge pages helps: the THP mode (the
// sysfs line, "always [madvise] never") is madvise, and godebug does not
// say disablethp=1.
func wanted(mode, godebug string) bool {
	if !contains(mode, "[madvise]") {
		return false
	}
	for godebug != "" {
		kv := godebug
		godebug = ""
		for i := 0; i < len(kv); i++ {
			if kv[i] == ',' {
				kv, godebug = kv[:i], kv[i+1:]
				break
			}
		}
		if trimSpace(kv) == "disablethp=1" {
			return false
		}
	}
	return true
}

// contains and trimSpace are strings.Contains and strings.TrimSpace (for
// ASCII), which this package cannot import without being initialised
// later.
func contains(s, sub string) bool {
	for i := 0; i+len(sub) <= len(s); i++ {
		if s[i:i+len(sub)] == sub {
			return true
		}
	}
	return false
}

func trimSpace(s string) string {
	space := func(c byte) bool { return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\v' || c == '\f' }
	for len(s) > 0 && space(s[0]) {
		s = s[1:]
	}
	for len(s) > 0 && space(s[len(s)-1]) {
		s = s[:len(s)-1]
	}
	return s
}
