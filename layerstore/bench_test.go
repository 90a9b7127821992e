package layerstore

import (
	"archive/tar"
	"bufio"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
)

// writeBenchTar writes a deterministic layer of n files and about total
// bytes: 100 dirs, sizes spread from a few hundred bytes to ~80 KB.
func writeBenchTar(b *testing.B, path string, n int, total int64) int64 {
	f, err := os.Create(path)
	if err != nil {
		b.Fatal(err)
	}
	defer f.Close()
	bw := bufio.NewWriterSize(f, 1<<20)
	tw := tar.NewWriter(bw)
	rng := rand.New(rand.NewPCG(42, 42))
	buf := make([]byte, 1<<20)
	for i := range buf {
		buf[i] = byte(rng.IntN(256))
	}
	for d := range 100 {
		tw.WriteHeader(&tar.Header{Name: fmt.Sprintf("d%02d/", d), Typeflag: tar.TypeDir, Mode: 0o755, ModTime: fixedTime})
	}
	avg := total / int64(n)
	var sum int64
	for i := range n {
		size := rng.Int64N(2*avg-256) + 256
		tw.WriteHeader(&tar.Header{Name: fmt.Sprintf("d%02d/f%05d", i%100, i), Typeflag: tar.TypeReg, Mode: 0o644, Size: size, ModTime: fixedTime})
		off := rng.IntN(len(buf) - int(size))
		tw.Write(buf[off : off+int(size)])
		sum += size
	}
	tw.Close()
	bw.Flush()
	return sum
}

// BenchmarkImport10k imports a 10k-file, ~200 MB layer, against `tar -x`
// of the same tar as the floor (same disk, same page cache state).
//
//	go test -run '^$' -bench Import10k -benchtime 3x ./layerstore
//
// Measured here (2 cores shared with four other engineers' builds and
// tests, ext4 on virtio, root; the disk is the bottleneck and shared, so
// single runs swing by 2×; these are -benchtime 3x means of two runs):
//
//	tar-x    2.7–4.7 s/op
//	lamina   5.5–6.0 s/op   (1.2–2.2× tar -x; a lone run took 2.4 s)
//
// lamina does more than tar: it hashes the stream (diff ID), keeps a copy
// of the blob, and syncs everything (one syncfs) before the atomic commit,
// where tar leaves its data dirty in the page cache. A CPU profile shows
// ~75% in syscalls, half of them openat(O_CREAT) of the 10k files, as for
// tar; hashing is ~2%.
func BenchmarkImport10k(b *testing.B) {
	dir := b.TempDir()
	tarPath := filepath.Join(dir, "layer.tar")
	size := writeBenchTar(b, tarPath, 10000, 200<<20)
	b.Run("lamina", func(b *testing.B) {
		b.SetBytes(size)
		for i := range b.N {
			b.StopTimer()
			s, err := Open(filepath.Join(dir, fmt.Sprint("store", i)))
			if err != nil {
				b.Fatal(err)
			}
			f, _ := os.Open(tarPath)
			b.StartTimer()
			if _, err := s.ImportTar(f, ImportOptions{}); err != nil {
				b.Fatal(err)
			}
			b.StopTimer()
			f.Close()
			os.RemoveAll(s.Root())
			b.StartTimer()
		}
	})
	b.Run("tar-x", func(b *testing.B) {
		b.SetBytes(size)
		for i := range b.N {
			b.StopTimer()
			out := filepath.Join(dir, fmt.Sprint("x", i))
			os.Mkdir(out, 0o755)
			b.StartTimer()
			if o, err := exec.Command("tar", "-C", out, "-xf", tarPath).CombinedOutput(); err != nil {
				b.Fatalf("tar: %v %s", err, o)
			}
			b.StopTimer()
			os.RemoveAll(out)
			b.StartTimer()
		}
	})
}

// BenchmarkExport10k exports the same 10k-file layer back to an OCI tar
// (overlay whiteouts converted back), against `tar -c` of the diff dir.
// Measured here: lamina 0.43–0.56 s/op, tar -c 0.45–0.54 s/op (1.0×).
func BenchmarkExport10k(b *testing.B) {
	dir := b.TempDir()
	tarPath := filepath.Join(dir, "layer.tar")
	size := writeBenchTar(b, tarPath, 10000, 200<<20)
	s, err := Open(filepath.Join(dir, "store"))
	if err != nil {
		b.Fatal(err)
	}
	f, _ := os.Open(tarPath)
	img, err := s.ImportTar(f, ImportOptions{})
	f.Close()
	if err != nil {
		b.Fatal(err)
	}
	out := filepath.Join(dir, "out.tar")
	b.Run("lamina", func(b *testing.B) {
		b.SetBytes(size)
		for range b.N {
			w, _ := os.Create(out)
			bw := bufio.NewWriterSize(w, 1<<20)
			if err := s.ExportLayer(img.Layers[0].ChainID, bw); err != nil {
				b.Fatal(err)
			}
			bw.Flush()
			w.Close()
		}
	})
	b.Run("tar-c", func(b *testing.B) {
		b.SetBytes(size)
		for range b.N {
			if o, err := exec.Command("tar", "-C", s.LayerDir(img.Layers[0].ChainID), "-cf", out, ".").CombinedOutput(); err != nil {
				b.Fatalf("tar: %v %s", err, o)
			}
		}
	})
}
