package fsops

import (
	"bytes"
	"path/filepath"
	"sort"
	"strings"

	"golang.org/x/sys/unix"
)

// Source is where a Gen gets its choices: *math/rand/v2.Rand for seeded
// runs, ByteSource for fuzzing.
type Source interface {
	IntN(n int) int
}

// ByteSource turns fuzz input into choices, one or two bytes a choice.
// Once the bytes run out every choice is 0 and Done reports true.
type ByteSource struct {
	b []byte
	i int
}

// NewByteSource returns a Source reading b.
func NewByteSource(b []byte) *ByteSource { return &ByteSource{b: b} }

// IntN returns a choice in [0, n).
func (s *ByteSource) IntN(n int) int {
	if n <= 1 {
		return 0
	}
	v := 0
	for range 1 + btoi(n > 256) {
		if s.i >= len(s.b) {
			s.i = len(s.b) + 1
			return 0
		}
		v = v<<8 | int(s.b[s.i])
		s.i++
	}
	return v % n
}

// Done reports whether the input has been used up.
func (s *ByteSource) Done() bool { return s.i > len(s.b) }

func btoi(b bool) int {
	if b {
		return 1
	}
	return 0
}

// Gen generates random operation sequences that mostly name paths that
// exist, so that most operations do something (copy-up, whiteouts,
// renames over existing names) rather than fail with ENOENT. It keeps a
// model of which paths exist, updated by Observe and reset from a real
// snapshot by Reset; the model only steers choices, so when it drifts (a
// rename between two links of one file does nothing, say) the sequence is
// still valid, just less pointed.
type Gen struct {
	src   Source
	paths map[string]bool // path -> is a directory
	n     int             // ops generated, to vary data
}

// Names is the pool new names come from. It overlaps with Standard's names
// so that creations collide with whiteouts and lower entries.
var Names = []string{"a", "b", "c", "d0", "d1", "e", "n", "s"}

// XattrNames are the attributes Gen sets and removes: user.* and trusted.*
// that are not overlay's own.
var XattrNames = []string{"user.k", "user.x", "trusted.t", "trusted.y"}

var (
	modes  = []uint32{0o644, 0o600, 0o755, 0o700, 0o444, 0o4755, 0o1777, 0o640}
	ids    = []int{0, 1000, 65534}
	times  = []int64{T0 + 1, 1500000000, 1700000000}
	sizes  = []int64{0, 1, 100, 4096, 5000, 70000, 1 << 20}
	offs   = []int64{0, 1, 3, 4096, 65535, 1 << 20}
	weight = [numKinds]int{
		Create: 10, Write: 15, Truncate: 5, Chmod: 6, Chown: 4, Utimes: 4,
		Rename: 10, Unlink: 8, Mkdir: 6, Rmdir: 5, Link: 5, Symlink: 5,
		Mkfifo: 2, Setxattr: 6, Removexattr: 3, Fallocate: 2,
	}
)

// NewGen returns a generator whose model starts as tree (a Snapshot of the
// union before the first operation).
func NewGen(src Source, tree Tree) *Gen {
	g := &Gen{src: src}
	g.Reset(tree)
	return g
}

// Reset replaces the model by the paths of tree.
func (g *Gen) Reset(tree Tree) {
	g.paths = map[string]bool{}
	for p, e := range tree {
		if p != "." {
			g.paths[p] = e.Type == TypeDir
		}
	}
}

func (g *Gen) sorted(filter func(isDir bool) bool) []string {
	var ps []string
	for p, d := range g.paths {
		if filter(d) {
			ps = append(ps, p)
		}
	}
	sort.Strings(ps)
	return ps
}

func (g *Gen) pick(ps []string) string {
	if len(ps) == 0 {
		return "a"
	}
	return ps[g.src.IntN(len(ps))]
}

// existing picks a path that exists (any type).
func (g *Gen) existing() string { return g.pick(g.sorted(func(bool) bool { return true })) }

// file picks an existing non-directory, or sometimes any path.
func (g *Gen) file() string {
	if g.src.IntN(8) == 0 {
		return g.existing()
	}
	return g.pick(g.sorted(func(d bool) bool { return !d }))
}

// dir picks an existing directory, the root included.
func (g *Gen) dir() string {
	ds := append([]string{"."}, g.sorted(func(d bool) bool { return d })...)
	return g.pick(ds)
}

// fresh picks a name in an existing directory; it may exist already.
func (g *Gen) fresh() string {
	d := g.dir()
	for strings.Count(d, "/") >= 3 {
		d = filepath.Dir(d)
	}
	return filepath.Join(d, g.pick(Names))
}

// any is an existing path most of the time, else a fresh one.
func (g *Gen) any(existing func() string) string {
	if g.src.IntN(5) == 0 {
		return g.fresh()
	}
	return existing()
}

func (g *Gen) data() []byte {
	g.n++
	n := []int{1, 7, 100, 4096, 10000}[g.src.IntN(5)]
	unit := []byte{byte('a' + g.src.IntN(26)), byte('0' + g.n%10)}
	return bytes.Repeat(unit, n)[:n]
}

// Next returns the next operation.
func (g *Gen) Next() Op {
	total := 0
	for _, w := range weight {
		total += w
	}
	r := g.src.IntN(total)
	k := Kind(0)
	for ; r >= weight[k]; k++ {
		r -= weight[k]
	}
	op := Op{Kind: k}
	switch k {
	case Create:
		op.Path, op.Mode, op.Data = g.fresh(), g.pick2(modes), g.data()
	case Write:
		op.Path, op.Data, op.Off = g.any(g.file), g.data(), offs[g.src.IntN(len(offs))]
		op.Flags = []int{0, 0, unix.O_APPEND, unix.O_TRUNC}[g.src.IntN(4)]
	case Truncate:
		op.Path, op.Off = g.any(g.file), sizes[g.src.IntN(len(sizes))]
	case Chmod:
		op.Path, op.Mode = g.any(g.existing), g.pick2(modes)
	case Chown:
		op.Path, op.UID, op.GID = g.any(g.existing), ids[g.src.IntN(len(ids))], ids[g.src.IntN(len(ids))]
	case Utimes:
		op.Path, op.Time = g.any(g.existing), times[g.src.IntN(len(times))]
	case Rename:
		op.Path = g.any(g.existing)
		if g.src.IntN(2) == 0 {
			op.Path2 = g.existing()
		} else {
			op.Path2 = g.fresh()
		}
	case Unlink:
		op.Path = g.any(g.file)
	case Mkdir:
		op.Path, op.Mode = g.fresh(), []uint32{0o755, 0o700, 0o1777}[g.src.IntN(3)]
	case Rmdir:
		op.Path = g.any(g.dir)
	case Link:
		op.Path, op.Path2 = g.any(g.file), g.fresh()
	case Symlink:
		op.Path = g.fresh()
		if g.src.IntN(2) == 0 {
			op.Target = filepath.Base(g.existing())
		} else {
			op.Target = g.pick(Names) + "/" + g.pick(Names)
		}
	case Mkfifo:
		op.Path, op.Mode = g.fresh(), 0o644
	case Setxattr:
		op.Path, op.Name = g.any(g.existing), g.pick(XattrNames)
		op.Data = []byte(g.pick(Names))
	case Removexattr:
		op.Path, op.Name = g.any(g.existing), g.pick(XattrNames)
	case Fallocate:
		op.Path, op.Off, op.Len = g.any(g.file), offs[g.src.IntN(len(offs))], sizes[1+g.src.IntN(len(sizes)-1)]
	}
	return op
}

func (g *Gen) pick2(ms []uint32) uint32 { return ms[g.src.IntN(len(ms))] }

// Observe updates the model with op's outcome.
func (g *Gen) Observe(op Op, e unix.Errno) {
	if e != 0 {
		return
	}
	switch op.Kind {
	case Create, Mkfifo, Symlink:
		g.paths[op.Path] = false
	case Mkdir:
		g.paths[op.Path] = true
	case Link:
		g.paths[op.Path2] = false
	case Unlink, Rmdir:
		g.remove(op.Path)
	case Rename:
		if op.Path == op.Path2 {
			return
		}
		g.remove(op.Path2)
		for p, d := range g.paths {
			if p == op.Path || strings.HasPrefix(p, op.Path+"/") {
				delete(g.paths, p)
				g.paths[op.Path2+strings.TrimPrefix(p, op.Path)] = d
			}
		}
	}
}

func (g *Gen) remove(p string) {
	for q := range g.paths {
		if q == p || strings.HasPrefix(q, p+"/") {
			delete(g.paths, q)
		}
	}
}
