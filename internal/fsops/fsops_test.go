package fsops

import (
	"math/rand/v2"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

func TestGenIsReproducible(t *testing.T) {
	tree := Tree{"d0": {Type: TypeDir}, "d0/a": {Type: TypeFile}, "e": {Type: TypeFile}}
	run := func() []Op {
		g := NewGen(rand.New(rand.NewPCG(5, 5)), tree)
		var out []Op
		for range 300 {
			op := g.Next()
			g.Observe(op, 0)
			out = append(out, op)
		}
		return out
	}
	a, b := run(), run()
	if !reflect.DeepEqual(a, b) {
		t.Fatal("the same seed gave two sequences")
	}
	kinds := map[Kind]bool{}
	for _, op := range a {
		kinds[op.Kind] = true
		for _, p := range []string{op.Path, op.Path2, op.Target} {
			if strings.Contains(p, "..") || filepath.IsAbs(p) {
				t.Errorf("op leaves the tree: %s", op)
			}
		}
	}
	if len(kinds) < int(numKinds) {
		t.Errorf("300 ops used only %d kinds of %d: %v", len(kinds), numKinds, kinds)
	}
}

func TestByteSourceEnds(t *testing.T) {
	s := NewByteSource([]byte{7, 1, 2})
	if v := s.IntN(5); v != 2 {
		t.Errorf("IntN(5) of 7 = %d", v)
	}
	if v := s.IntN(1000); v != (1<<8|2)%1000 {
		t.Errorf("IntN(1000) = %d", v)
	}
	if s.Done() {
		t.Error("Done before the bytes ran out")
	}
	if v := s.IntN(5); v != 0 || !s.Done() {
		t.Errorf("after the end: %d, done %v", v, s.Done())
	}
}

func TestFlatten(t *testing.T) {
	got := map[string]bool{}
	for _, s := range Flatten(Standard()) {
		got[s.Path] = true
	}
	for _, p := range []string{"d0", "d0/a", "d0/c", "d1", "d1/c", "e", "a", "b", "c", "d2/p", "d3/d0/e"} {
		if !got[p] {
			t.Errorf("%s missing from the flattened Standard fixture", p)
		}
	}
	for _, p := range []string{"d0/b", "d1/a", "d1/d2"} {
		if got[p] {
			t.Errorf("%s is hidden (whiteout or opaque dir) but Flatten shows it", p)
		}
	}
}

func TestHashIgnoresHoles(t *testing.T) {
	d := t.TempDir()
	sparse, dense := filepath.Join(d, "sparse"), filepath.Join(d, "dense")
	if err := writeAt(sparse, "x", 3<<20); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 3<<20+1)
	buf[3<<20] = 'x'
	if err := os.WriteFile(dense, buf, 0o644); err != nil {
		t.Fatal(err)
	}
	hs, err := hashFile(sparse, 3<<20+1)
	if err != nil {
		t.Fatal(err)
	}
	hd, err := hashFile(dense, 3<<20+1)
	if err != nil {
		t.Fatal(err)
	}
	if hs != hd {
		t.Errorf("sparse and dense copies hash %s and %s", hs, hd)
	}
	buf[5] = 1
	_ = os.WriteFile(dense, buf, 0o644)
	if h, _ := hashFile(dense, 3<<20+1); h == hs {
		t.Error("a changed byte does not change the hash")
	}
}

func TestApplySnapshotDiff(t *testing.T) {
	d := t.TempDir()
	ops := []Op{
		{Kind: Mkdir, Path: "d", Mode: 0o755},
		{Kind: Create, Path: "d/f", Mode: 0o644, Data: []byte("hello")},
		{Kind: Write, Path: "d/f", Off: 1, Data: []byte("EL")},
		{Kind: Write, Path: "d/f", Flags: unix.O_APPEND, Data: []byte("!")},
		{Kind: Link, Path: "d/f", Path2: "g"},
		{Kind: Symlink, Path: "s", Target: "d/f"},
		{Kind: Mkfifo, Path: "p", Mode: 0o600},
		{Kind: Rename, Path: "g", Path2: "h"},
		{Kind: Rmdir, Path: "d"},
		{Kind: Setxattr, Path: "h", Name: "user.k", Data: []byte("v")},
	}
	want := []unix.Errno{0, 0, 0, 0, 0, 0, 0, 0, unix.ENOTEMPTY, 0}
	for i, op := range ops {
		if got := Apply(d, op); got != want[i] {
			if op.Kind == Setxattr && got == unix.ENOTSUP {
				continue // a filesystem without user xattrs
			}
			t.Errorf("%s: %s, want %s", op, ErrnoName(got), ErrnoName(want[i]))
		}
	}
	a, err := Snapshot(d)
	if err != nil {
		t.Fatal(err)
	}
	if e := a["d/f"]; e.Size != 6 || e.Nlink != 2 || e.Type != TypeFile {
		t.Errorf("d/f recorded as %+v", e)
	}
	if a["s"].Target != "d/f" || a["p"].Type != TypeFifo {
		t.Errorf("symlink or fifo recorded wrong: %+v %+v", a["s"], a["p"])
	}
	if diff := Diff(a, a); diff != nil {
		t.Errorf("a tree differs from itself: %v", diff)
	}
	Apply(d, Op{Kind: Chmod, Path: "h", Mode: 0o600})
	b, _ := Snapshot(d)
	diff := Diff(a, b)
	if len(diff) != 2 || !strings.Contains(diff[0], "mode") {
		t.Errorf("chmod of a hard link: diff %q, want the mode of both names", diff)
	}
}
