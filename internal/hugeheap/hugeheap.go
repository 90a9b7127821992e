// Package hugeheap puts the Go heap of lamina's programs on transparent
// huge pages: the heap each program starts with (package early), and the
// heap a union's server grows into (Grower).
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
// address space. (The start-up heap: see package early, which this
// package imports, so that every program that links it has its start-up
// heap on huge pages.)
package hugeheap

import (
	"math"
	"runtime"
	"sync/atomic"
	"unsafe"

	"github.com/lamina-project/lamina/internal/hugeheap/early"
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
	hugePage = early.HugePage
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

// enabled is whether this process uses huge pages for its heap (see
// package early, which decides it once, at its initialisation).
var enabled = early.Enabled()

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
