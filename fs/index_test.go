package fs

import (
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/lamina-project/lamina/cow"
)

// statted counts the entries of d whose stat is cached.
func statted(d *dirIndex) int {
	n := 0
	for _, e := range d.entries {
		if e.st.Load() != nil {
			n++
		}
	}
	return n
}

// idle waits for p's worker to have nothing left to do.
func idle(t *testing.T, p *prefetcher) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(time.Millisecond) {
		p.mu.Lock()
		active := p.active
		p.mu.Unlock()
		if !active {
			return
		}
	}
	t.Fatal("the prefetcher did not finish")
}

// TestStatAheadOnListingOrSeveralLookups checks when the entries of a lower
// directory are stat'ed in the background: when the kernel lists it, when
// it is looked up in a directory that was listed, or once a few names in
// it are looked up; not for the first lookups (the start of a container's
// command looks up one or two names in /bin).
func TestStatAheadOnListingOrSeveralLookups(t *testing.T) {
	root := t.TempDir()
	for _, d := range []string{"bin", "lib", "lib/sub", "usr", "usr/sub"} {
		if err := os.Mkdir(filepath.Join(root, d), 0o755); err != nil {
			t.Fatal(err)
		}
		for i := 0; i < 50; i++ {
			if err := os.WriteFile(filepath.Join(root, d, fmt.Sprintf("f%d", i)), nil, 0o644); err != nil {
				t.Fatal(err)
			}
		}
	}
	p := &prefetcher{}
	l := newLayerIndex(cow.DefaultNS(), root, 0, p)

	for i := 1; i < lookupsBeforeStat; i++ {
		d := l.lookedUp("bin")
		idle(t, p)
		if n := statted(d); n != 0 {
			t.Fatalf("after %d lookups, %d entries of the directory were stat'ed; want none", i, n)
		}
	}
	d := l.lookedUp("bin")
	idle(t, p)
	if n := statted(d); n != len(d.entries) {
		t.Fatalf("after %d lookups, %d of %d entries were stat'ed; want all", lookupsBeforeStat, n, len(d.entries))
	}

	d = l.listed("lib")
	idle(t, p)
	if n := statted(d); n != len(d.entries) {
		t.Fatalf("after a listing, %d of %d entries were stat'ed; want all", n, len(d.entries))
	}

	// A subdirectory looked up in a listed directory (a walk) is stat'ed
	// ahead; one looked up in a directory nobody listed is not.
	sub := l.subdir(d, "lib/sub")
	idle(t, p)
	if n := statted(sub); n != len(sub.entries) {
		t.Fatalf("a subdirectory of a listed directory: %d of %d entries stat'ed; want all", n, len(sub.entries))
	}
	sub = l.subdir(l.dir("usr"), "usr/sub")
	idle(t, p)
	if n := statted(sub); n != 0 {
		t.Fatalf("a subdirectory of a directory nobody listed: %d entries stat'ed; want none", n)
	}
}

// TestWarm checks that MountOptions.Warm reads, in every lower layer, the
// listings of the directories along the paths, top down, and nothing
// below them.
func TestWarm(t *testing.T) {
	var lowers []string
	for i := 0; i < 2; i++ {
		l := t.TempDir()
		for _, d := range []string{"usr/bin", "etc", "opt/x"} {
			if err := os.MkdirAll(filepath.Join(l, d), 0o755); err != nil {
				t.Fatal(err)
			}
		}
		lowers = append(lowers, l)
	}
	u, err := newUnion(Config{Lower: lowers}, MountOptions{})
	if err != nil {
		t.Fatal(err)
	}
	u.warm([]string{"/usr/bin/true", "/etc/hosts", "bin/sh", "/etc/hostname"})
	want := []string{"", "usr", "usr/bin", "etc", "bin"}
	for j, l := range u.lowers {
		l.mu.Lock()
		got := len(l.dirs)
		l.mu.Unlock()
		if got != len(want) {
			t.Errorf("layer %d: %d listings read, want %d (%q)", j, got, len(want), want)
		}
		for _, d := range want {
			l.mu.Lock()
			di := l.dirs[d]
			l.mu.Unlock()
			if di == nil {
				t.Fatalf("layer %d: %q not read", j, d)
			}
			<-di.ready
			if wantMissing := d == "bin"; di.missing != wantMissing {
				t.Errorf("layer %d: %q missing %v, want %v", j, d, di.missing, wantMissing)
			}
		}
	}
}
