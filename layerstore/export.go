package layerstore

import (
	"archive/tar"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"syscall"

	"github.com/opencontainers/go-digest"
	"golang.org/x/sys/unix"
)

// ExportLayer writes the layer chainID as an OCI layer tar: the inverse of
// unpacking, with overlay whiteouts (char 0/0) turned back into .wh.NAME
// and opaque dirs into .wh..wh..opq. Entries are in lexical walk order and
// hard links are kept as links.
//
// Prefer OpenBlob(layer.Blob) to hand back the layer exactly as imported;
// ExportLayer is for layers whose diff dir is the truth (container diffs,
// or a store whose blob was lost).
func (s *Store) ExportLayer(chainID digest.Digest, w io.Writer) error {
	return ExportDir(s.LayerDir(chainID), w)
}

// ExportDir writes the overlay-format tree at root as an OCI layer tar.
func ExportDir(root string, w io.Writer) error {
	tw := tar.NewWriter(w)
	links := map[[2]uint64]string{} // (dev, ino) → first name, for hard links
	opaque := OpaqueXattr()
	buf := make([]byte, 1<<20)
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(root, p)
		if err != nil || rel == "." {
			return err
		}
		fi, err := d.Info()
		if err != nil {
			return err
		}
		st := fi.Sys().(*syscall.Stat_t)
		dir, base := filepath.Split(rel)
		if fi.Mode()&fs.ModeCharDevice != 0 && st.Rdev == 0 {
			return tw.WriteHeader(&tar.Header{Name: dir + whiteoutPrefix + base, Typeflag: tar.TypeReg, Mode: 0o644, ModTime: fi.ModTime()})
		}
		link := ""
		if fi.Mode()&fs.ModeSymlink != 0 {
			if link, err = os.Readlink(p); err != nil {
				return err
			}
		}
		h, err := tar.FileInfoHeader(fi, link)
		if err != nil {
			return fmt.Errorf("export %s: %w", rel, err)
		}
		h.Name = rel
		h.Uname, h.Gname = "", ""
		if fi.IsDir() {
			h.Name += "/"
		}
		if fi.Mode().IsRegular() && st.Nlink > 1 {
			key := [2]uint64{st.Dev, st.Ino}
			if first, ok := links[key]; ok {
				h.Typeflag, h.Linkname, h.Size = tar.TypeLink, first, 0
			} else {
				links[key] = rel
			}
		}
		if err := exportXattrs(p, h); err != nil {
			return fmt.Errorf("export %s: %w", rel, err)
		}
		if err := tw.WriteHeader(h); err != nil {
			return err
		}
		if fi.IsDir() {
			if v, err := getxattr(p, opaque); err == nil && v == "y" {
				return tw.WriteHeader(&tar.Header{Name: rel + "/" + whiteoutOpaque, Typeflag: tar.TypeReg, Mode: 0o644, ModTime: fi.ModTime()})
			}
			return nil
		}
		if h.Typeflag == tar.TypeReg && h.Size > 0 {
			f, err := os.Open(p)
			if err != nil {
				return err
			}
			_, err = io.CopyBuffer(tw, struct{ io.Reader }{f}, buf)
			f.Close()
			return err
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("export layer: %w", err)
	}
	return tw.Close()
}

// exportXattrs copies xattrs into PAX records, leaving out overlay's own.
func exportXattrs(p string, h *tar.Header) error {
	sz, err := unix.Llistxattr(p, nil)
	if err != nil || sz == 0 {
		return nil
	}
	names := make([]byte, sz)
	if sz, err = unix.Llistxattr(p, names); err != nil {
		return nil
	}
	for _, name := range strings.Split(strings.TrimRight(string(names[:sz]), "\x00"), "\x00") {
		if name == "" || strings.HasPrefix(name, "trusted.overlay.") || strings.HasPrefix(name, "user.overlay.") {
			continue
		}
		v, err := getxattr(p, name)
		if err != nil {
			continue
		}
		if h.PAXRecords == nil {
			h.PAXRecords = map[string]string{}
		}
		h.PAXRecords["SCHILY.xattr."+name] = v
		h.Format = tar.FormatPAX
	}
	return nil
}

func getxattr(p, name string) (string, error) {
	buf := make([]byte, 256)
	for {
		n, err := unix.Lgetxattr(p, name, buf)
		if errors.Is(err, unix.ERANGE) {
			buf = make([]byte, len(buf)*4)
			continue
		}
		if err != nil {
			return "", err
		}
		return string(buf[:n]), nil
	}
}
