package fuzz

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/lamina-project/lamina/layerstore"
)

// tarOf builds a seed tar in code: name → body, with "->" for symlinks,
// "=>" for hard links and a trailing "/" for dirs.
func tarOf(entries ...[2]string) []byte {
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, e := range entries {
		h := &tar.Header{Name: e[0], Mode: 0o644, Typeflag: tar.TypeReg, Size: int64(len(e[1]))}
		body := e[1]
		switch {
		case len(e[0]) > 0 && e[0][len(e[0])-1] == '/':
			h.Typeflag, h.Size, h.Mode, body = tar.TypeDir, 0, 0o755, ""
		case len(body) > 2 && body[:2] == "->":
			h.Typeflag, h.Linkname, h.Size, body = tar.TypeSymlink, body[2:], 0, ""
		case len(body) > 2 && body[:2] == "=>":
			h.Typeflag, h.Linkname, h.Size, body = tar.TypeLink, body[2:], 0, ""
		}
		tw.WriteHeader(h)
		tw.Write([]byte(body))
	}
	tw.Close()
	return buf.Bytes()
}

func gzipped(b []byte) []byte {
	var buf bytes.Buffer
	w := gzip.NewWriter(&buf)
	w.Write(b)
	w.Close()
	return buf.Bytes()
}

// FuzzTarImport feeds arbitrary bytes to the tar import. It must never
// panic; a refused input must leave nothing in the store; an accepted one
// must leave a store fsck calls clean; nothing is ever written outside the
// store's root.
func FuzzTarImport(f *testing.F) {
	seeds := [][]byte{
		tarOf([2]string{"etc/", ""}, [2]string{"etc/passwd", "root:x:0:0"}),
		tarOf([2]string{"a", "1"}, [2]string{"b", "=>a"}, [2]string{"l", "->/etc"}),
		tarOf([2]string{"l", "->.."}, [2]string{"l/x", "escape"}),
		tarOf([2]string{"../x", "escape"}),
		tarOf([2]string{"d/", ""}, [2]string{"d/.wh..wh..opq", ""}, [2]string{"d/.wh.gone", ""}),
		tarOf([2]string{"a", "1"}, [2]string{"a", "2"}),
		gzipped(tarOf([2]string{"z", "zipped"})),
		tarOf()[:700],
		{},
		[]byte("not a tar"),
	}
	for _, s := range seeds {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		outer := t.TempDir()
		s, err := layerstore.Open(filepath.Join(outer, "store"))
		if err != nil {
			t.Fatal(err)
		}
		s.MaxLayerSize = 16 << 20
		img, err := s.ImportTar(bytes.NewReader(data), layerstore.ImportOptions{Tags: []string{"fuzz"}})
		if err != nil {
			if !errors.Is(err, layerstore.ErrInvalidArchive) {
				t.Fatalf("refusal is not ErrInvalidArchive: %v", err)
			}
			for _, d := range []string{"layers", "blobs/sha256", "tmp"} {
				if ents, _ := os.ReadDir(filepath.Join(outer, "store", d)); len(ents) != 0 {
					t.Fatalf("refused import left %s: %v", d, ents)
				}
			}
		} else {
			if len(img.Layers) != 1 {
				t.Fatalf("image with %d layers", len(img.Layers))
			}
			rep, err := s.Fsck(false)
			if err != nil || !rep.Clean() || len(rep.Orphans) > 0 {
				t.Fatalf("fsck after import: %v %v %v", err, rep.Problems, rep.Orphans)
			}
		}
		if ents, _ := os.ReadDir(outer); len(ents) != 1 {
			t.Fatalf("import wrote outside the store: %v", ents)
		}
	})
}
