package layerstore

import (
	"archive/tar"
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/lamina-project/lamina/internal/testutil"
	"github.com/opencontainers/go-digest"
	"golang.org/x/sys/unix"
)

// TestImportRefusesBadArchives is the tar-escape table: every case must be
// refused with ErrInvalidArchive and leave nothing in the store.
func TestImportRefusesBadArchives(t *testing.T) {
	good := makeTar(t, dir("etc"), file("etc/passwd", "root:x:0:0::/root:/bin/sh\n"))
	bomb := makeTar(t, file("big", strings.Repeat("z", 1<<20)))
	cases := []struct {
		name string
		data []byte
		max  int64
		want string
	}{
		{"dotdot", makeTar(t, file("../evil", "x")), 0, "escapes"},
		{"dotdot inside", makeTar(t, dir("a"), file("a/../../evil", "x")), 0, "escapes"},
		{"absolute", makeTar(t, file("/etc/evil", "x")), 0, "absolute"},
		{"symlink then file through it", makeTar(t, symlink("etc", "/etc"), file("etc/evil", "x")), 0, "through symlink"},
		{"symlink then dir through it", makeTar(t, symlink("d", "../.."), dir("d/sub")), 0, "through symlink"},
		{"relative symlink then file", makeTar(t, symlink("up", ".."), file("up/x", "x")), 0, "through symlink"},
		{"hardlink outside", makeTar(t, hardlink("h", "../../etc/shadow")), 0, "escapes"},
		{"hardlink absolute", makeTar(t, hardlink("h", "/etc/shadow")), 0, "absolute"},
		{"hardlink to unseen target", makeTar(t, hardlink("h", "later"), file("later", "x")), 0, "not (yet) in the layer"},
		{"hardlink to dir", makeTar(t, dir("d"), hardlink("h", "d")), 0, "not a file"},
		{"hardlink through symlink", makeTar(t, symlink("s", "/etc"), hardlink("h", "s/passwd")), 0, "not (yet)"},
		{"duplicate file", makeTar(t, file("a", "1"), file("a", "2")), 0, "duplicate"},
		{"file then dir", makeTar(t, file("a", "1"), dir("a")), 0, "duplicate"},
		{"file as parent", makeTar(t, file("a", "1"), file("a/b", "2")), 0, "not a directory"},
		{"whiteout and file", makeTar(t, file("a", "1"), whiteoutOf(".wh.a")), 0, "also contains"},
		{"file after whiteout", makeTar(t, whiteoutOf(".wh.a"), file("a", "1")), 0, "duplicate"},
		{"empty whiteout", makeTar(t, whiteoutOf(".wh.")), 0, "without a name"},
		{"root not a dir", makeTar(t, file(".", "")), 0, "root must be a directory"},
		{"truncated", good[:700], 0, "truncated"},
		{"truncated at header boundary", good[:1024], 0, "truncated"},
		{"empty input", nil, 0, "empty input"},
		{"corrupt gzip", corruptTail(gz(t, good)), 0, ""},
		{"truncated gzip", gz(t, good)[:40], 0, ""},
		{"truncated zstd", zst(t, good)[:30], 0, ""},
		{"xz", append([]byte{0xfd, '7', 'z', 'X', 'Z', 0}, good...), 0, "unsupported compression xz"},
		{"not a tar", bytes.Repeat([]byte("hello world\n"), 100), 0, ""},
		{"bomb plain", bomb, 64 << 10, "exceeds the limit"},
		{"bomb gzip", gz(t, bomb), 64 << 10, "exceeds the limit"},
		{"bomb zstd", zst(t, bomb), 64 << 10, "exceeds the limit"},
		{"file under a whiteout", makeTar(t, whiteoutOf(".wh.a"), file(".wh.a/b", "1")), 0, "through whiteout"},
		{"unsupported type", makeTar(t, ent{name: "x", typ: 'Z', mode: 0o644}), 0, "unsupported entry type"},
		{"wrong digest", good, 0, "expected sha256:"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			s := openTemp(t)
			s.MaxLayerSize = c.max
			opts := ImportOptions{Tags: []string{"bad"}}
			if c.name == "wrong digest" {
				opts.Digest = digest.FromString("something else")
			}
			_, err := s.ImportTar(bytes.NewReader(c.data), opts)
			if err == nil {
				t.Fatal("import succeeded; want refusal")
			}
			if !errors.Is(err, ErrInvalidArchive) {
				t.Errorf("err = %v; want ErrInvalidArchive", err)
			}
			if c.want != "" && !strings.Contains(err.Error(), c.want) {
				t.Errorf("err = %v; want it to mention %q", err, c.want)
			}
			assertEmptyStore(t, s)
		})
	}
}

func corruptTail(b []byte) []byte {
	b = append([]byte{}, b...)
	b[len(b)-6] ^= 0xff // CRC32 in the gzip trailer
	return b
}

// assertEmptyStore checks that nothing became visible.
func assertEmptyStore(t *testing.T, s *Store) {
	t.Helper()
	for _, d := range []string{"blobs/sha256", "layers", "tmp"} {
		ents, err := os.ReadDir(filepath.Join(s.Root(), d))
		if err != nil {
			t.Fatal(err)
		}
		if len(ents) != 0 {
			t.Errorf("%s not empty after refused import: %v", d, ents)
		}
	}
	imgs, err := s.Images()
	if err != nil || len(imgs) != 0 {
		t.Errorf("images after refused import: %v, %v", imgs, err)
	}
}

func TestImportAcceptsOddButSafeArchives(t *testing.T) {
	cases := []struct {
		name string
		data []byte
	}{
		{"dir listed twice", makeTar(t, dir("a"), file("a/x", "1"), dir("a"))},
		{"root entry", makeTar(t, dir("./"), file("./x", "1"))},
		{"implicit parents", makeTar(t, file("a/b/c/d", "1"))},
		{"symlink pointing out (not followed)", makeTar(t, symlink("etc", "/etc"), symlink("up", "../../.."))},
		{"hardlink to earlier file", makeTar(t, file("a", "1"), hardlink("b", "a"))},
		{"hardlink to symlink", makeTar(t, symlink("s", "/x"), hardlink("t", "s"))},
		{"empty tar", makeTar(t)},
		{"gzip", gz(t, makeTar(t, file("x", "1")))},
		{"zstd", zst(t, makeTar(t, file("x", "1")))},
		{"aufs meta ignored", makeTar(t, dir(".wh..wh.plnk"), file(".wh..wh.plnk/123", ""), file("x", "1"))},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			s := openTemp(t)
			if _, err := s.ImportTar(bytes.NewReader(c.data), ImportOptions{}); err != nil {
				t.Fatal(err)
			}
			assertFsckClean(t, s)
		})
	}
}

func assertFsckClean(t *testing.T, s *Store) {
	t.Helper()
	rep, err := s.Fsck(false)
	if err != nil {
		t.Fatal(err)
	}
	if !rep.Clean() || len(rep.Orphans) > 0 {
		t.Fatalf("fsck: problems %v orphans %v", rep.Problems, rep.Orphans)
	}
}

// TestUnpackOverlayFormat checks the conversion to kernel overlay format:
// .wh.NAME → char device 0/0, .wh..wh..opq → opaque xattr, overlay xattrs
// from the image dropped, modes (setuid too) and mtimes kept.
func TestUnpackOverlayFormat(t *testing.T) {
	s := openTemp(t)
	data := makeTar(t,
		dir("etc"),
		whiteoutOf("etc/.wh.shadow"),
		dir("var/cache"),
		whiteoutOf("var/cache/.wh..wh..opq"),
		file("var/cache/keep", "k"),
		withMode(file("bin/su", "elf"), 0o4755),
		withPAX(file("forged", "x"), "SCHILY.xattr.trusted.overlay.redirect", "/etc"),
		withPAX(file("labelled", "x"), "SCHILY.xattr.user.note", "hi"),
		fifo("pipe"),
	)
	img, err := s.ImportTar(bytes.NewReader(data), ImportOptions{Tags: []string{"t"}})
	if err != nil {
		t.Fatal(err)
	}
	root := s.LayerDir(img.Layers[0].ChainID)
	var st unix.Stat_t
	if err := unix.Lstat(filepath.Join(root, "etc/shadow"), &st); err != nil {
		t.Fatal(err)
	}
	if st.Mode&unix.S_IFMT != unix.S_IFCHR || st.Rdev != 0 {
		t.Errorf("whiteout: mode %o rdev %d; want char 0/0", st.Mode, st.Rdev)
	}
	if _, err := os.Lstat(filepath.Join(root, "etc/.wh.shadow")); !os.IsNotExist(err) {
		t.Errorf(".wh. file left in the layer: %v", err)
	}
	buf := make([]byte, 8)
	n, err := unix.Lgetxattr(filepath.Join(root, "var/cache"), OpaqueXattr(), buf)
	if err != nil || string(buf[:n]) != "y" {
		t.Errorf("opaque xattr = %q, %v; want y", buf[:n], err)
	}
	if _, err := unix.Lgetxattr(filepath.Join(root, "forged"), "trusted.overlay.redirect", buf); err == nil {
		t.Error("image could set trusted.overlay.redirect")
	}
	fi, err := os.Stat(filepath.Join(root, "bin/su"))
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode()&os.ModeSetuid == 0 || fi.Mode().Perm() != 0o755 {
		t.Errorf("bin/su mode = %v; want setuid 0755", fi.Mode())
	}
	if !fi.ModTime().Equal(fixedTime) {
		t.Errorf("mtime = %v; want %v", fi.ModTime(), fixedTime)
	}
	if fi, err := os.Lstat(filepath.Join(root, "pipe")); err != nil || fi.Mode()&os.ModeNamedPipe == 0 {
		t.Errorf("fifo: %v %v", fi, err)
	}
	if img.Layers[0].Size != int64(len("k")+len("elf")+2) {
		t.Errorf("layer size = %d", img.Layers[0].Size)
	}
}

func TestDeviceNodesKeptAsRoot(t *testing.T) {
	testutil.RequirePrivileged(t) // device nodes and chown need root
	s := openTemp(t)
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	tw.WriteHeader(&tar.Header{Name: "dev/null", Typeflag: tar.TypeChar, Devmajor: 1, Devminor: 3, Mode: 0o666, Uid: 0})
	tw.WriteHeader(&tar.Header{Name: "home/u", Typeflag: tar.TypeReg, Mode: 0o600, Uid: 1234, Gid: 5678})
	tw.Close()
	img, err := s.ImportTar(&buf, ImportOptions{})
	if err != nil {
		t.Fatal(err)
	}
	var st unix.Stat_t
	root := s.LayerDir(img.Layers[0].ChainID)
	if err := unix.Lstat(filepath.Join(root, "dev/null"), &st); err != nil || unix.Major(st.Rdev) != 1 || unix.Minor(st.Rdev) != 3 {
		t.Errorf("dev/null: rdev %d:%d, %v", unix.Major(st.Rdev), unix.Minor(st.Rdev), err)
	}
	if err := unix.Lstat(filepath.Join(root, "home/u"), &st); err != nil || st.Uid != 1234 || st.Gid != 5678 {
		t.Errorf("owner = %d:%d, %v; want 1234:5678", st.Uid, st.Gid, err)
	}
}

// TestExportRoundTrip unpacks a layer with whiteouts, an opaque dir and a
// hard link, exports it, and re-imports the export: the same tree (same
// diff dir listing and whiteouts) must come back.
func TestExportRoundTrip(t *testing.T) {
	s := openTemp(t)
	img := importT(t, s, makeTar(t,
		dir("etc"), whiteoutOf("etc/.wh.shadow"),
		dir("var"), whiteoutOf("var/.wh..wh..opq"), file("var/keep", "k"),
		file("a", "body"), hardlink("b", "a"), symlink("c", "a"),
		withPAX(file("x", "1"), "SCHILY.xattr.user.note", "hi"),
	))
	var buf bytes.Buffer
	if err := s.ExportLayer(img.Layers[0].ChainID, &buf); err != nil {
		t.Fatal(err)
	}
	names := map[string]byte{}
	tr := tar.NewReader(bytes.NewReader(buf.Bytes()))
	for {
		h, err := tr.Next()
		if err != nil {
			break
		}
		names[h.Name] = h.Typeflag
	}
	for n, typ := range map[string]byte{"etc/.wh.shadow": tar.TypeReg, "var/.wh..wh..opq": tar.TypeReg, "b": tar.TypeLink, "c": tar.TypeSymlink} {
		if names[n] != typ {
			t.Errorf("export: %s has type %q; want %q (all: %v)", n, names[n], typ, names)
		}
	}
	img2 := importT(t, openTemp(t), buf.Bytes())
	if img2.Layers[0].Size != img.Layers[0].Size {
		t.Errorf("re-import size %d; want %d", img2.Layers[0].Size, img.Layers[0].Size)
	}
}
