package early

import (
	"os"
	"path/filepath"
	"strings"
	"syscall"
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
		{"always [madvise] never\n", "disablethp=1", false},
		{"always [madvise] never\n", " disablethp=1 ,x=2", false},
		{"always [madvise] never\n", "x=1,,disablethp=1", false},
		{"always [madvise] never\n", "x=1,", true},
		{"always [madvise] never\n", "disablethp=10", true},
		{"[always] madvise never\n", "", false},
		{"always madvise [never]\n", "", false},
		{"", "", false}, // no THP in this kernel
	} {
		if got := wanted(c.mode, c.godebug); got != c.want {
			t.Errorf("wanted(%q, %q) = %v, want %v", c.mode, c.godebug, got, c.want)
		}
	}
}

// TestReadModeAt checks that what a container may have put at the mode
// file's path (lamina exec's helper reads it in the container's mount
// namespace) can neither block nor flood the read.
func TestReadModeAt(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "enabled")
	if err := os.WriteFile(file, []byte("always [madvise] never\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	fifo := filepath.Join(dir, "fifo")
	if err := syscall.Mkfifo(fifo, 0o644); err != nil {
		t.Fatal(err)
	}
	link := filepath.Join(dir, "link")
	if err := os.Symlink(file, link); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct{ path, want string }{
		{file, "always [madvise] never\n"},
		{fifo, ""},        // no writer: would block without O_NONBLOCK
		{"/dev/zero", ""}, // endless
		{link, ""},        // the last component a symlink
		{dir, ""},         // a directory
		{filepath.Join(dir, "missing"), ""},
	} {
		done := make(chan string, 1)
		go func() { done <- readModeAt(c.path) }()
		select {
		case got := <-done:
			if got != c.want {
				t.Errorf("readModeAt(%s) = %q, want %q", c.path, got, c.want)
			}
		case <-time.After(5 * time.Second):
			t.Fatalf("readModeAt(%s) blocked", c.path)
		}
	}
}

// TestTrimSpaceAndContains holds the hand-written helpers to the strings
// package's functions they stand for.
func TestTrimSpaceAndContains(t *testing.T) {
	for _, s := range []string{"", " ", "x", " x ", "\tdisablethp=1\n", "a b", "\r\v\f x\f"} {
		if got, want := trimSpace(s), strings.TrimSpace(s); got != want {
			t.Errorf("trimSpace(%q) = %q, want %q", s, got, want)
		}
		for _, sub := range []string{"", "x", "[madvise]", " ", "a b c"} {
			if got, want := contains(s, sub), strings.Contains(s, sub); got != want {
				t.Errorf("contains(%q, %q) = %v, want %v", s, sub, got, want)
			}
		}
	}
}
