// Package hugeheap puts the Go heap of lamina's programs on transparent
// huge pages: the heap each program starts with (at this package's
// initialisation), and the heap a union's server grows into (Grower).
// In a program built with cgo it also keeps glibc's malloc to one arena
// (arena_cgo.go). Both are there to save page faults.
//
// Why: on the 2-vCPU PVM guest this project measures on, the first touch
// of a 4 KiB page costs 13.5 µs (the hypervisor shadows the guest's page
// tables); a 2 MiB huge page costs 0.24 µs per 4 KiB it holds. A union's
// server keeps a node for every name the kernel has seen, about 1 KiB of
// heap each, so a stat of every file of a 20k-file tree grew laminafs's
// heap by some 30 MiB: 8000 first touches, about 100 ms of a 0.65 s walk.
// A Go program's start touches about 1 MiB more. Go stopped asking for
// huge pages itself in 1.21.1, and Debian's default THP mode is
// "madvise", so the heap gets 4 KiB pages.
//
// How the server's heap grows on huge pages: the runtime maps heap memory
// as it needs it, and places new spans at the lowest free addresses.
// extend allocates one large object, which makes the runtime map a Region
// of fresh heap, marks that range MADV_HUGEPAGE, drops the object and runs
// a collection: the range stays mapped and free, and what the server
// allocates next fills it, 2 MiB per fault. Nothing of it is resident
// until touched, and nothing depends on it but speed: if a future runtime
// placed spans elsewhere, the cost would be the collection and some
// address space. (The start-up heap: see init.)
package hugeheap

import (
	"math"
	"os"
	"runtime"
	"strings"
	"sync/atomic"
	"unsafe"

	"golang.org/x/sys/unix"
)

const (
	// Region is the heap range each extension marks for huge pages.
	Region = 64 << 20
	// first is the count (Grower.Step) at which the first region is
	// made: a small union (a short container's) never pays for one.
	first = 1 << 10
	// every is how much the count grows before the next region: about
	// what a Region holds at 1 KiB per counted object, less a margin.
	every = 48 << 10
	// hugePage is the x86-64 THP size; the marked range is aligned to it.
	hugePage = 2 << 20
)

// Grower extends the huge-page part of the heap as a count of the
// server's objects (a union's nodes) grows. Make one with New.
type Grower struct {
	next   atomic.Int64 // count at which to extend next; MaxInt64 when off
	extend func()       // what an extension does (tests replace it)
}

// New returns a Grower that is on when the kernel gives huge pages on
// request (THP mode "madvise") and neither GODEBUG (disablethp=1) nor
// LAMINA_HUGEHEAP=off turns them off; in mode "always" the heap has them
// already. With now, the first region is made at once, in the background,
// rather than when the count reaches its first threshold: for a server
// that lives long and expects large trees, so that its own start-up
// allocations and the first thousand nodes are on huge pages too, at the
// price of a collection (a few ms of CPU) whether or not it ever grows.
func New(now bool) *Grower {
	g := &Grower{extend: extend}
	switch {
	case !enabled:
		g.next.Store(math.MaxInt64)
	case now:
		g.next.Store(every)
		go g.extend()
	default:
		g.next.Store(first)
	}
	return g
}

// Step tells g that the count is now n; when it has passed the next
// threshold, a region is made in the background. Safe for concurrent use
// and cheap: one atomic load unless a threshold is passed.
func (g *Grower) Step(n int64) {
	next := g.next.Load()
	if n < next {
		return
	}
	if g.next.CompareAndSwap(next, n+every) {
		go g.extend()
	}
}

// enabled is whether this process uses huge pages for its heap: decided
// once, at initialisation (the mode file is read once per process, not
// again on each union's mount), and never changed.
var enabled = os.Getenv(offEnv) != "off" && wanted(readMode(), os.Getenv("GODEBUG"))

// offEnv, set to "off", keeps a process's heap on small pages: for A/B
// measurements, or where memory counts more than speed (a huge page is
// resident as a whole).
const offEnv = "LAMINA_HUGEHEAP"

// readMode reads the THP mode line, "" if there is none. It runs at the
// start of every lamina process, including `lamina exec`'s helper, which
// is in the container's mount namespace by then (runtime/nsenter), where
// the file may be anything a privileged container put there: so no
// blocking open, a regular file only, and a bounded read.
func readMode() string { return readModeAt("/sys/kernel/mm/transparent_hugepage/enabled") }

func readModeAt(path string) string {
	fd, err := unix.Open(path, unix.O_RDONLY|unix.O_NONBLOCK|unix.O_CLOEXEC|unix.O_NOFOLLOW, 0)
	if err != nil {
		return ""
	}
	defer unix.Close(fd)
	var st unix.Stat_t
	if unix.Fstat(fd, &st) != nil || st.Mode&unix.S_IFMT != unix.S_IFREG {
		return ""
	}
	var b [128]byte
	n, err := unix.Read(fd, b[:])
	if err != nil || n <= 0 {
		return ""
	}
	return string(b[:n])
}

// wanted reports whether asking for huge pages helps: the THP mode (the
// sysfs line, "always [madvise] never") is madvise, and godebug does not
// say disablethp=1.
func wanted(mode, godebug string) bool {
	if !strings.Contains(mode, "[madvise]") {
		return false
	}
	for _, kv := range strings.Split(godebug, ",") {
		if strings.TrimSpace(kv) == "disablethp=1" {
			return false
		}
	}
	return true
}

// extend makes the runtime map a Region of fresh heap marked for huge
// pages, and collects it so that it is free for what comes next (see the
// package doc).
func extend() {
	mapRegion()
	runtime.GC()
}

// mapRegion allocates a Region and marks it for huge pages; it is garbage
// once mapRegion returns.
func mapRegion() {
	buf := make([]byte, Region)
	if lo, hi := alignedRange(uintptr(unsafe.Pointer(unsafe.SliceData(buf))), len(buf)); lo < hi {
		_ = unix.Madvise(buf[lo:hi], unix.MADV_HUGEPAGE)
	}
}

// alignedRange returns the offsets in a block of n bytes at address base
// of the largest part that starts and ends on huge-page boundaries.
func alignedRange(base uintptr, n int) (lo, hi int) {
	start := (base + hugePage - 1) &^ (hugePage - 1)
	end := (base + uintptr(n)) &^ (hugePage - 1)
	if end <= start {
		return 0, 0
	}
	return int(start - base), int(end - base)
}

// init puts the heap a program starts with on huge pages, so that a
// lamina process's start (the CLI, a container's monitor, a Go init)
// does not take a page fault for each 4 KiB its start-up touches: about
// 300 faults, 4 ms, for `lamina --version`. The runtime maps its first
// heap as one 4 MiB chunk (its page allocator's unit), 4 MiB aligned,
// starts allocating at its bottom (or, with Go 1.26's randomised heap
// base, at a random page in it: the Makefile builds lamina without
// it, see there) and goes up. The huge page around
// what it has allocated so far is made with MADV_COLLAPSE (about 0.7 ms here), which copies what is
// resident there already; the one above it in the chunk is usually not
// touched yet, and MADV_COLLAPSE refuses a range with no page table
// (EINVAL), so it is marked MADV_HUGEPAGE instead: its first touch then
// faults in the whole 2 MiB at once. (Collapsing only, a `lamina run`
// took some 350 faults in that upper half, about 4.7 ms.) It runs at the
// initialisation of this package, which every lamina program links, so
// the initialisation of most others is covered too; like Grower, only in
// THP mode madvise.
func init() {
	if !enabled {
		return
	}
	startHuge(uintptr(unsafe.Pointer(new([64]byte))))
}

// startChunk is the runtime's unit of heap mapping (pallocChunkBytes).
const startChunk = 4 << 20

// startHuge backs the heap around address a, and above it to the end of
// its chunk, with huge pages (see init): each huge page is collapsed if
// it has pages already, else marked for huge pages on first touch.
// Failure (a kernel without MADV_COLLAPSE, no free huge page, a runtime
// that maps its heap otherwise) leaves things as they were.
func startHuge(a uintptr) {
	end := a&^(startChunk-1) + startChunk
	for p := a &^ (hugePage - 1); p < end; p += hugePage {
		if _, _, e := unix.Syscall(unix.SYS_MADVISE, p, hugePage, unix.MADV_COLLAPSE); e == unix.EINVAL {
			_, _, _ = unix.Syscall(unix.SYS_MADVISE, p, hugePage, unix.MADV_HUGEPAGE)
		}
	}
}
