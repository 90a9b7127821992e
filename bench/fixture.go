package bench

import (
	"bufio"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"

	"golang.org/x/sys/unix"
)

// Spec sizes the fixture. Every field has a default (DefaultSpec) and the
// same Spec with the same Seed always builds the same bytes.
type Spec struct {
	Seed          int64   `json:"seed"`
	Layers        int     `json:"layers"`         // lower layers of the main fixture
	TreeFiles     int     `json:"tree_files"`     // files under tree/ before whiteouts
	BigDirEntries int     `json:"bigdir_entries"` // entries of bigdir/, split over two layers
	BigFileBytes  int64   `json:"big_file_bytes"` // big.bin, for sequential/random read and copy-up-big
	RandReads     int     `json:"rand_reads"`     // 4 KiB preads at random offsets of big.bin
	CopyUpFiles   int     `json:"copyup_files"`   // small lower files copied up by copy-up-small
	CreateFiles   int     `json:"create_files"`   // files created then deleted by create-delete
	RenameFiles   int     `json:"rename_files"`   // lower files renamed by rename
	LookupFiles   int     `json:"lookup_files"`   // distinct deep paths looked up by lookup
	LookupDepth   int     `json:"lookup_depth"`   // directories above each looked-up file
	GoSrc         string  `json:"gosrc"`          // source tree tarred for untar and copied for grep
	ScaleLayers   []int   `json:"scale_layers"`   // layer counts of the lookup scaling curve
	CopyUpSizes   []int64 `json:"copyup_sizes"`   // file sizes of the copy-up scaling curve
	ScaleLookups  int     `json:"scale_lookups"`  // lookups per point of the scaling curve
}

// DefaultSpec is the fixture of shared/research/baseline-bench.md: 20k
// files in a tree, a 10k-entry merged directory, a 1 GiB file, the Go
// source tree, three layers.
func DefaultSpec() Spec {
	return Spec{
		Seed:          1,
		Layers:        3,
		TreeFiles:     20000,
		BigDirEntries: 10000,
		BigFileBytes:  1 << 30,
		RandReads:     20000,
		CopyUpFiles:   2000,
		CreateFiles:   10000,
		RenameFiles:   1000,
		LookupFiles:   2000,
		LookupDepth:   8,
		GoSrc:         defaultGoSrc(),
		ScaleLayers:   []int{1, 2, 4, 8, 16, 32, 64, 128},
		CopyUpSizes:   []int64{4 << 10, 64 << 10, 1 << 20, 16 << 20, 256 << 20},
		ScaleLookups:  2000,
	}
}

// SmallSpec runs the whole harness in a minute or two.
func SmallSpec() Spec {
	s := DefaultSpec()
	s.TreeFiles = 2000
	s.BigDirEntries = 2000
	s.BigFileBytes = 64 << 20
	s.RandReads = 2000
	s.CopyUpFiles = 200
	s.CreateFiles = 1000
	s.RenameFiles = 200
	s.LookupFiles = 200
	s.GoSrc = filepath.Join(s.GoSrc, "go")
	s.ScaleLayers = []int{1, 4, 16, 64}
	s.CopyUpSizes = []int64{4 << 10, 1 << 20, 16 << 20}
	s.ScaleLookups = 200
	return s
}

// ScaleFiles sets the file counts from one number, the size of tree/.
func (s *Spec) ScaleFiles(n int) {
	s.TreeFiles = n
	s.BigDirEntries = max(n/2, 2)
	s.CopyUpFiles = max(n/10, 1)
	s.CreateFiles = max(n/2, 1)
	s.RenameFiles = max(n/20, 1)
	s.LookupFiles = max(n/10, 1)
	s.ScaleLookups = max(n/10, 1)
}

func defaultGoSrc() string {
	if _, err := os.Stat("/usr/local/go/src"); err == nil {
		return "/usr/local/go/src"
	}
	out, err := exec.Command("go", "env", "GOROOT").Output()
	if err == nil {
		return filepath.Join(strings.TrimSpace(string(out)), "src")
	}
	return "/usr/local/go/src"
}

func (s Spec) validate() error {
	switch {
	case s.Layers < 1:
		return errors.New("need at least one layer")
	case s.TreeFiles < 8:
		return errors.New("need at least 8 tree files")
	case s.BigDirEntries < 2, s.CopyUpFiles < 1, s.CreateFiles < 1, s.RenameFiles < 1,
		s.LookupFiles < 1, s.LookupDepth < 1, s.ScaleLookups < 1:
		return errors.New("file counts must be positive")
	case s.BigFileBytes < blockSize:
		return fmt.Errorf("big file must be at least %d bytes", blockSize)
	case s.GoSrc == "":
		return errors.New("no source tree for untar and grep")
	}
	for _, n := range s.ScaleLayers {
		if n < 1 {
			return errors.New("scale layer counts must be positive")
		}
	}
	return nil
}

func (s Spec) hash() string {
	b, _ := json.Marshal(s)
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:8])
}

// tree is the shape of tree/: nsub subdirectories of per files each,
// grouped ten to a directory (tree/dNN/sM).
type tree struct{ dirs, nsub, per int }

func (s Spec) tree() tree {
	nsub := max(4, s.TreeFiles/100)
	t := tree{nsub: nsub, per: max(2, s.TreeFiles/nsub)}
	t.dirs = (nsub + 9) / 10
	return t
}

// Fixture is the built fixture: layer directories and what a correct union
// of them shows, which is how every workload checks its result.
type Fixture struct {
	Spec   Spec     `json:"spec"`
	Hash   string   `json:"hash"`
	Dir    string   `json:"dir"`
	Lower  []string `json:"lower"`       // main fixture, top first
	Scale  []string `json:"scale_lower"` // scaling layers, top first; the bottom one holds the files
	GoTar  string   `json:"gosrc_tar"`
	Expect Expect   `json:"expect"`
}

// Expect is what a correct union of the fixture shows.
type Expect struct {
	TreeFiles int    `json:"tree_files"` // regular files under tree/
	TreeDirs  int    `json:"tree_dirs"`  // directories under tree/, tree/ itself excluded
	BigDir    int    `json:"bigdir"`     // entries of bigdir/
	Whiteouts int    `json:"whiteouts"`  // whiteouts in the top layer (a union must hide them)
	GoFiles   int    `json:"go_files"`   // regular files of the source tree
	GoBytes   int64  `json:"go_bytes"`   // their bytes
	GoDirs    int    `json:"go_dirs"`    // directories of the source tree
	DeepPath  string `json:"deep_path"`  // directory holding the looked-up files
}

// ScaleLower returns the n layers of the lookup scaling fixture, top first.
func (f *Fixture) ScaleLower(n int) []string {
	return f.Scale[len(f.Scale)-n:]
}

const manifestName = "fixture.json"

// Prepare returns the fixture in dir for spec, building it unless a
// complete one for the same spec is already there. progress (may be nil)
// hears what is being built.
func Prepare(dir string, spec Spec, progress func(string)) (*Fixture, bool, error) {
	if err := spec.validate(); err != nil {
		return nil, false, fmt.Errorf("fixture: %w", err)
	}
	if progress == nil {
		progress = func(string) {}
	}
	hash := spec.hash()
	if b, err := os.ReadFile(filepath.Join(dir, manifestName)); err == nil {
		var f Fixture
		if json.Unmarshal(b, &f) == nil && f.Hash == hash && f.Dir == dir {
			return &f, false, nil
		}
	}
	if err := os.RemoveAll(dir); err != nil {
		return nil, false, fmt.Errorf("fixture: %w", err)
	}
	f, err := build(dir, spec, hash, progress)
	if err != nil {
		return nil, false, fmt.Errorf("fixture: %w", err)
	}
	b, _ := json.MarshalIndent(f, "", "  ")
	if err := writeFileSync(filepath.Join(dir, manifestName), b); err != nil {
		return nil, false, fmt.Errorf("fixture: %w", err)
	}
	return f, true, nil
}

// Paths inside the union.
const (
	treeDir   = "tree"
	bigDir    = "bigdir"
	bigFile   = "big.bin"
	copyUpDir = "cu"
	renameDir = "meta"
	deepDir   = "deep"
	goDir     = "gosrc"
	sizesDir  = "sizes"
)

func sizeFile(n int64) string { return filepath.Join(sizesDir, fmt.Sprintf("z%012d", n)) }

func build(dir string, s Spec, hash string, progress func(string)) (*Fixture, error) {
	f := &Fixture{Spec: s, Hash: hash, Dir: dir}
	for i := 0; i < s.Layers; i++ {
		f.Lower = append(f.Lower, filepath.Join(dir, "l", fmt.Sprint(i)))
	}
	maxScale := 0
	for _, n := range s.ScaleLayers {
		maxScale = max(maxScale, n)
	}
	// Short paths: 128 lowerdirs must fit in overlay's one-page mount data.
	for i := 0; i < maxScale; i++ {
		f.Scale = append(f.Scale, filepath.Join(dir, "s", fmt.Sprint(i)))
	}
	for _, d := range append(append([]string{}, f.Lower...), f.Scale...) {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return nil, err
		}
	}
	top, bottom := f.Lower[0], f.Lower[len(f.Lower)-1]
	second := bottom // the layer above the bottom one, or the bottom itself
	if s.Layers > 1 {
		second = f.Lower[len(f.Lower)-2]
	}
	rng := newRand(uint64(s.Seed))

	progress("tree")
	t := s.tree()
	for k := 0; k < t.nsub; k++ {
		d := k / 10
		layer := f.Lower[(s.Layers-1)-d*s.Layers/t.dirs]
		sub := filepath.Join(layer, treeDir, fmt.Sprintf("d%02d", d), fmt.Sprintf("s%d", k%10))
		if err := smallFiles(sub, "f", t.per, rng); err != nil {
			return nil, err
		}
	}
	f.Expect.TreeFiles = t.nsub * t.per
	f.Expect.TreeDirs = t.dirs + t.nsub
	if s.Layers > 1 {
		// Over the bottom layer's tree/d00: s0 overridden by the second
		// layer, in the top layer s1 partly whited out, s2 opaque with
		// new files, s3 whited out as a whole.
		d00 := filepath.Join(treeDir, "d00")
		if err := smallFiles(filepath.Join(second, d00, "s0"), "f", t.per, rng); err != nil {
			return nil, err
		}
		w := t.per / 2
		for i := 0; i < w; i++ {
			if err := whiteout(filepath.Join(top, d00, "s1", fmt.Sprintf("f%05d", i))); err != nil {
				return nil, err
			}
		}
		opq := filepath.Join(top, d00, "s2")
		knew := max(1, t.per/10)
		if err := smallFiles(opq, "n", knew, rng); err != nil {
			return nil, err
		}
		if err := unix.Setxattr(opq, "trusted.overlay.opaque", []byte("y"), 0); err != nil {
			return nil, fmt.Errorf("opaque %s: %w", opq, err)
		}
		if err := whiteout(filepath.Join(top, d00, "s3")); err != nil {
			return nil, err
		}
		f.Expect.Whiteouts = w + 1
		f.Expect.TreeFiles += -w - t.per + knew - t.per
		f.Expect.TreeDirs--
	}

	progress("bigdir")
	half := s.BigDirEntries / 2
	if err := emptyFiles(filepath.Join(bottom, bigDir), 0, half); err != nil {
		return nil, err
	}
	if err := emptyFiles(filepath.Join(second, bigDir), half, s.BigDirEntries); err != nil {
		return nil, err
	}
	f.Expect.BigDir = s.BigDirEntries

	progress("big.bin")
	if err := blockFile(filepath.Join(bottom, bigFile), s.BigFileBytes, s.Seed); err != nil {
		return nil, err
	}
	for _, n := range s.CopyUpSizes {
		if err := blockFile(filepath.Join(bottom, sizeFile(n)), n, s.Seed); err != nil {
			return nil, err
		}
	}
	if err := smallFiles(filepath.Join(bottom, copyUpDir), "c", s.CopyUpFiles, rng); err != nil {
		return nil, err
	}
	if err := smallFiles(filepath.Join(bottom, renameDir), "m", s.RenameFiles, rng); err != nil {
		return nil, err
	}

	progress("deep paths")
	f.Expect.DeepPath = deepPath(s.LookupDepth)
	if err := deepChain(f.Lower, f.Expect.DeepPath, s.LookupFiles, rng); err != nil {
		return nil, err
	}
	if len(f.Scale) > 0 {
		if err := deepChain(f.Scale, f.Expect.DeepPath, s.ScaleLookups, rng); err != nil {
			return nil, err
		}
	}

	progress("source tree")
	f.GoTar = filepath.Join(dir, "gosrc.tar")
	parent, base := filepath.Split(filepath.Clean(s.GoSrc))
	if out, err := exec.Command("tar", "-cf", f.GoTar, "-C", parent, base).CombinedOutput(); err != nil {
		return nil, fmt.Errorf("tar %s: %v: %s", s.GoSrc, err, out)
	}
	gosrc := filepath.Join(bottom, goDir)
	if err := os.MkdirAll(gosrc, 0o755); err != nil {
		return nil, err
	}
	if out, err := exec.Command("tar", "-xf", f.GoTar, "-C", gosrc).CombinedOutput(); err != nil {
		return nil, fmt.Errorf("untar %s: %v: %s", f.GoTar, err, out)
	}
	c, err := countTree(gosrc)
	if err != nil {
		return nil, err
	}
	f.Expect.GoFiles, f.Expect.GoBytes, f.Expect.GoDirs = c.Files, c.Bytes, c.Dirs
	unix.Sync()
	return f, nil
}

func deepPath(depth int) string {
	parts := []string{deepDir}
	for i := 0; i < depth; i++ {
		parts = append(parts, fmt.Sprintf("a%02d", i))
	}
	return filepath.Join(parts...)
}

// deepChain makes the directory chain in every layer and the files in the
// bottom one only, so a lookup of a file visits every layer.
func deepChain(layers []string, path string, n int, rng *xorshift) error {
	for _, l := range layers {
		if err := os.MkdirAll(filepath.Join(l, path), 0o755); err != nil {
			return err
		}
	}
	return smallFiles(filepath.Join(layers[len(layers)-1], path), "f", n, rng)
}

// smallFiles writes n files named prefix%05d of 64..4159 bytes into dir.
// Each starts with '#', which copy-up workloads write back in place so a
// flat directory's content never changes.
func smallFiles(dir, prefix string, n int, rng *xorshift) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	buf := make([]byte, 4160)
	for i := 0; i < n; i++ {
		size := 64 + int(rng.next()%4096)
		rng.fill(buf[:size])
		for j := range buf[:size] {
			buf[j] = 'a' + buf[j]%26
		}
		buf[0] = '#'
		if err := os.WriteFile(filepath.Join(dir, fmt.Sprintf("%s%05d", prefix, i)), buf[:size], 0o644); err != nil {
			return err
		}
	}
	return nil
}

func emptyFiles(dir string, from, to int) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	for i := from; i < to; i++ {
		if err := os.WriteFile(filepath.Join(dir, fmt.Sprintf("e%06d", i)), nil, 0o644); err != nil {
			return err
		}
	}
	return nil
}

func whiteout(p string) error {
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		return err
	}
	if err := unix.Mknod(p, unix.S_IFCHR, 0); err != nil {
		return fmt.Errorf("whiteout %s: %w", p, err)
	}
	return nil
}

// blockSize is the unit of big files: each block starts with its index
// (little-endian uint64), so a reader checks every byte offset it got is
// the one it asked for, followed by seeded pseudo-random bytes.
const blockSize = 4096

func blockFile(p string, size int64, seed int64) error {
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		return err
	}
	fh, err := os.Create(p)
	if err != nil {
		return err
	}
	w := bufio.NewWriterSize(fh, 1<<20)
	rng := newRand(uint64(seed) ^ 0x9e3779b97f4a7c15)
	var blk [blockSize]byte
	for off := int64(0); off < size; off += blockSize {
		rng.fill(blk[:])
		binary.LittleEndian.PutUint64(blk[:8], uint64(off/blockSize))
		n := min(int64(blockSize), size-off)
		if _, err := w.Write(blk[:n]); err != nil {
			fh.Close()
			return err
		}
	}
	if err := w.Flush(); err != nil {
		fh.Close()
		return err
	}
	return fh.Close()
}

func writeFileSync(p string, b []byte) error {
	tmp := p + ".tmp"
	fh, err := os.Create(tmp)
	if err != nil {
		return err
	}
	if _, err := fh.Write(b); err != nil {
		fh.Close()
		return err
	}
	if err := fh.Sync(); err != nil {
		fh.Close()
		return err
	}
	if err := fh.Close(); err != nil {
		return err
	}
	return os.Rename(tmp, p)
}

// counts is what a walk of a tree saw.
type counts struct {
	Files int   `json:"files"`
	Dirs  int   `json:"dirs"`
	Other int   `json:"other"`
	Bytes int64 `json:"bytes"`
}

func countTree(root string) (counts, error) {
	var c counts
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if p == root {
			return nil
		}
		switch {
		case d.IsDir():
			c.Dirs++
		case d.Type().IsRegular():
			c.Files++
			info, err := d.Info()
			if err != nil {
				return err
			}
			c.Bytes += info.Size()
		default:
			c.Other++
		}
		return nil
	})
	return c, err
}

// xorshift is a tiny seeded generator: the fixture must be the same bytes
// on every machine and Go version, which math/rand does not promise.
type xorshift struct{ s uint64 }

func newRand(seed uint64) *xorshift {
	if seed == 0 {
		seed = 0x2545f4914f6cdd1d
	}
	return &xorshift{s: seed}
}

func (x *xorshift) next() uint64 {
	x.s ^= x.s << 13
	x.s ^= x.s >> 7
	x.s ^= x.s << 17
	return x.s
}

func (x *xorshift) fill(b []byte) {
	for len(b) >= 8 {
		binary.LittleEndian.PutUint64(b, x.next())
		b = b[8:]
	}
	if len(b) > 0 {
		var tail [8]byte
		binary.LittleEndian.PutUint64(tail[:], x.next())
		copy(b, tail[:])
	}
}
