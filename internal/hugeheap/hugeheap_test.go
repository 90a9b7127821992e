package hugeheap

import (
	"fmt"
	"math"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"
	"unsafe"

	"github.com/lamina-project/lamina/internal/hugeheap/early"
	"golang.org/x/sys/unix"
)

func TestAlignedRange(t *testing.T) {
	const M = 1 << 20
	for _, c := range []struct {
		base   uintptr
		n      int
		lo, hi int
	}{
		{0xc000000000, 64 * M, 0, 64 * M},              // aligned
		{0xc000100000, 64 * M, 1 * M, 63 * M},          // starts mid-page
		{0xc000100000, 2 * M, 0, 0},                    // no whole huge page inside
		{0xc000200000, 3 * M, 0, 2 * M},                // one whole page, tail cut
		{0xc0001ff000, 4*M + 0x2000, 0x1000, 0x401000}, // both ends cut
	} {
		lo, hi := alignedRange(c.base, c.n)
		if lo != c.lo || hi != c.hi {
			t.Errorf("alignedRange(%#x, %d) = %#x, %#x; want %#x, %#x", c.base, c.n, lo, hi, c.lo, c.hi)
		}
	}
}

// TestStep checks when regions are made: at the first threshold, then
// after every further `every`, once each even with concurrent callers.
func TestStep(t *testing.T) {
	made := make(chan int64, 16)
	var g Grower
	g.next.Store(first)
	g.extend = func() { made <- 1 }
	for n := int64(1); n < first; n++ {
		g.Step(n)
	}
	if len(made) != 0 {
		t.Fatalf("%d regions before the first threshold", len(made))
	}
	done := make(chan bool)
	for w := 0; w < 4; w++ { // four servers' goroutines counting the same nodes
		go func() {
			for n := int64(first); n < first+every+10; n++ {
				g.Step(n)
			}
			done <- true
		}()
	}
	for w := 0; w < 4; w++ {
		<-done
	}
	deadline := time.After(5 * time.Second)
	for len(made) < 2 {
		select {
		case <-deadline:
			t.Fatalf("%d regions made, want 2", len(made))
		case <-time.After(time.Millisecond):
		}
	}
	time.Sleep(10 * time.Millisecond)
	if len(made) != 2 {
		t.Fatalf("%d regions made, want 2", len(made))
	}
	var off Grower
	off.next.Store(math.MaxInt64)
	off.extend = func() { t.Error("a disabled grower extended") }
	off.Step(1 << 40)
}

// TestExtendGivesHugePages checks Grower's mechanism on this kernel: in a
// fresh process, after extend, the node-sized objects allocated next are
// on huge pages, and without it they are not.
func TestExtendGivesHugePages(t *testing.T) {
	if childAction(t) {
		return
	}
	if got, _ := runChild(t, "TestExtendGivesHugePages", "extend"); got < 16<<20 {
		t.Errorf("after extend and 32 MiB of small objects, their mapping has %d KiB on huge pages, want at least 16 MiB", got>>10)
	}
	if got, _ := runChild(t, "TestExtendGivesHugePages", "walk"); got != 0 {
		t.Errorf("without extend, the objects' mapping has %d KiB on huge pages, want 0 (the control is broken)", got>>10)
	}
}

// TestStartHuge checks package early's mechanism on this kernel, on a
// 4 MiB-aligned anonymous region standing for the runtime's first heap
// chunk: with the first 130 pages touched (the runtime's and the first
// packages' start) and StartHuge given the address after them, the upper
// huge page faults in whole once the rest is touched, and the bottom one
// keeps its small pages. Without StartHuge, none of it is huge.
func TestStartHuge(t *testing.T) {
	if !early.Possible() {
		t.Skip("THP mode is not madvise, or GODEBUG has disablethp=1: nothing to do")
	}
	chunk := func(t *testing.T) (base uintptr, b []byte) {
		raw, err := unix.Mmap(-1, 0, 3*early.StartChunk, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_PRIVATE|unix.MAP_ANONYMOUS)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = unix.Munmap(raw) })
		start := uintptr(unsafe.Pointer(&raw[0]))
		base = (start + early.StartChunk - 1) &^ (early.StartChunk - 1)
		return base, raw[base-start : base-start+early.StartChunk]
	}
	const touched = 130
	for _, tc := range []struct {
		name  string
		start bool
		want  int64
	}{{"with StartHuge", true, hugePage}, {"without", false, 0}} {
		base, b := chunk(t)
		for i := 0; i < touched; i++ {
			b[i<<12] = 1
		}
		if tc.start {
			early.StartHuge(base + touched<<12)
		}
		for i := 0; i < len(b); i += 1 << 12 {
			b[i] = 1
		}
		if got := rangeAnonHuge(t, base, base+early.StartChunk); got != tc.want {
			t.Errorf("%s: the chunk has %d KiB on huge pages, want %d KiB", tc.name, got>>10, tc.want>>10)
		}
	}
}

// childEnv names the action of a test run as a child (runChild).
const childEnv = "HUGEHEAP_TEST_CHILD"

// childAction, in a child started by runChild, does the action asked
// for, allocates, and prints the AnonHugePages of the heap it used and
// how much of it should be on huge pages; it reports whether this is
// such a child.
func childAction(t *testing.T) bool {
	action := os.Getenv(childEnv)
	if action == "" {
		return false
	}
	if action == "extend" {
		extend()
	}
	// Allocate as a walk of a tree does: 32 MiB of node-sized objects,
	// written as nodes are.
	keep := make([][]byte, 0, 32<<10)
	for range 32 << 10 {
		b := make([]byte, 1<<10)
		b[0] = 1
		keep = append(keep, b)
	}
	a := uintptr(unsafe.Pointer(&keep[len(keep)/2][0]))
	fmt.Printf("anonhuge=%d want=0\n", rangeAnonHuge(t, a, a+1))
	runtime.KeepAlive(keep)
	return true
}

// runChild runs test in a fresh process (LAMINA_HUGEHEAP=off, so that
// its init leaves the heap alone) doing action, and returns the two
// numbers it printed.
func runChild(t *testing.T, test, action string) (anonHuge, want int64) {
	if !early.Possible() {
		t.Skip("THP mode is not madvise, or GODEBUG has disablethp=1: nothing to do")
	}
	cmd := exec.Command(os.Args[0], "-test.run=^"+test+"$", "-test.count=1")
	cmd.Env = append(os.Environ(), childEnv+"="+action, early.OffEnv+"=off")
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("child %s: %v\n%s", action, err, out)
	}
	var line string
	for _, l := range strings.Split(string(out), "\n") {
		if strings.HasPrefix(l, "anonhuge=") {
			line = l
		}
	}
	if _, err := fmt.Sscanf(line, "anonhuge=%d want=%d", &anonHuge, &want); err != nil {
		t.Fatalf("child %s printed %q", action, out)
	}
	return anonHuge, want
}

// rangeAnonHuge sums the AnonHugePages of the mappings that overlap the
// addresses [lo, hi).
func rangeAnonHuge(t *testing.T, lo, hi uintptr) int64 {
	b, err := os.ReadFile("/proc/self/smaps")
	if err != nil {
		t.Fatal(err)
	}
	in := false
	var sum int64
	for _, l := range strings.Split(string(b), "\n") {
		if f := strings.Fields(l); len(f) > 0 && strings.Contains(f[0], "-") && !strings.HasSuffix(f[0], ":") {
			s, e, ok := strings.Cut(f[0], "-")
			l0, e1 := strconv.ParseUint(s, 16, 64)
			h0, e2 := strconv.ParseUint(e, 16, 64)
			in = ok && e1 == nil && e2 == nil && uint64(lo) < h0 && uint64(hi) > l0
			continue
		}
		if v, ok := strings.CutPrefix(l, "AnonHugePages:"); ok && in {
			kb, err := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			if err != nil {
				t.Fatal(err)
			}
			sum += kb << 10
		}
	}
	return sum
}

// TestOneArena checks the constructor of arena_cgo.go: a new thread's
// malloc comes from the main arena, not from an arena of its own.
func TestOneArena(t *testing.T) {
	if !oneArena {
		t.Skip("built without cgo: no malloc in this program")
	}
	in, err := threadMallocInMainArena()
	if err != nil {
		t.Fatal(err)
	}
	if !in {
		t.Error("a new thread's malloc came from an arena of its own (M_ARENA_MAX not 1)")
	}
}
