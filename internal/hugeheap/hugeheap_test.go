package hugeheap

import (
	"bufio"
	"math"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"
)

func TestWanted(t *testing.T) {
	for _, c := range []struct {
		mode, godebug string
		want          bool
	}{
		{"always [madvise] never\n", "", true},
		{"always [madvise] never\n", "madvdontneed=1", true},
		{"always [madvise] never\n", "madvdontneed=1,disablethp=1", false},
		{"always [madvise] never\n", "disablethp=0", true},
		{"[always] madvise never\n", "", false},
		{"always madvise [never]\n", "", false},
		{"", "", false}, // no THP in this kernel
	} {
		if got := wanted(c.mode, c.godebug); got != c.want {
			t.Errorf("wanted(%q, %q) = %v, want %v", c.mode, c.godebug, got, c.want)
		}
	}
}

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

// TestExtendGivesHugePages checks the mechanism on this kernel: after
// extend, the objects a server allocates next are on huge pages.
func TestExtendGivesHugePages(t *testing.T) {
	if !wanted(readMode(), os.Getenv("GODEBUG")) {
		t.Skipf("THP mode is %q, not madvise: nothing to do", strings.TrimSpace(readMode()))
	}
	before := anonHuge(t)
	extend()
	keep := make([][]byte, 0, 32<<10)
	for range 32 << 10 { // 32 MiB of node-sized objects, written as nodes are
		b := make([]byte, 1<<10)
		b[0] = 1
		keep = append(keep, b)
	}
	after := anonHuge(t)
	if got := after - before; got < 16<<20 {
		t.Errorf("AnonHugePages grew by %d KiB after extend and 32 MiB of small objects, want at least 16 MiB", got>>10)
	}
	if len(keep) == 0 {
		t.Fatal("unreachable")
	}
}

// anonHuge is the process's resident anonymous memory on huge pages.
func anonHuge(t *testing.T) int64 {
	f, err := os.Open("/proc/self/smaps_rollup")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "AnonHugePages:"); ok {
			kb, err := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			if err != nil {
				t.Fatal(err)
			}
			return kb << 10
		}
	}
	t.Fatal("no AnonHugePages in smaps_rollup")
	return 0
}
