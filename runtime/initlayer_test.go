package runtime

import (
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"

	"github.com/lamina-project/lamina/cow"
	"github.com/lamina-project/lamina/driver"
	"github.com/lamina-project/lamina/internal/testutil"
	"github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"
)

// makeLayer builds a layer directory from a list of entries: "d NAME MODE"
// a directory, "f NAME" a file, "l NAME TARGET" a symlink, "w NAME" a
// whiteout, "o NAME" marks directory NAME opaque ("o ." the layer root).
func makeLayer(t *testing.T, entries ...string) string {
	t.Helper()
	dir := t.TempDir()
	for _, e := range entries {
		f := strings.Fields(e)
		p := filepath.Join(dir, f[1])
		var err error
		switch f[0] {
		case "d":
			mode := os.FileMode(0o755)
			if len(f) > 2 {
				var m uint32
				for _, c := range f[2] {
					m = m*8 + uint32(c-'0')
				}
				mode = os.FileMode(m)
			}
			if err = os.Mkdir(p, 0o700); err == nil {
				err = os.Chmod(p, mode)
			}
		case "f":
			err = os.WriteFile(p, []byte("image"), 0o644)
		case "l":
			err = os.Symlink(f[2], p)
		case "w":
			err = unix.Mknod(p, unix.S_IFCHR, 0)
		case "o":
			err = unix.Setxattr(p, cow.DefaultNS().Opaque(), []byte("y"), 0)
		}
		if err != nil {
			t.Fatalf("layer entry %q: %v", e, err)
		}
	}
	return dir
}

// tree lists dir's content as "NAME TYPE MODE" lines, sorted.
func tree(t *testing.T, dir string) []string {
	t.Helper()
	var out []string
	err := filepath.Walk(dir, func(p string, fi os.FileInfo, err error) error {
		if err != nil || p == dir {
			return err
		}
		rel, _ := filepath.Rel(dir, p)
		kind := "f"
		if fi.IsDir() {
			kind = "d"
		}
		out = append(out, rel+" "+kind+" "+strings.TrimPrefix(fi.Mode().Perm().String(), "-"))
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	sort.Strings(out)
	return out
}

func TestInitLayer(t *testing.T) {
	// Whiteouts are device nodes, opaque markers trusted xattrs.
	testutil.RequirePrivileged(t)
	full := []string{"d proc", "d sys", "d dev", "d etc", "f etc/hosts", "f etc/hostname", "f etc/resolv.conf"}
	all := "dev d rwxr-xr-x|etc d rwxr-xr-x|etc/hostname f rw-r--r--|etc/hosts f rw-r--r--|etc/resolv.conf f rw-r--r--|proc d rwxr-xr-x|sys d rwxr-xr-x"
	files := "etc d rwxr-x---|etc/hostname f rw-r--r--|etc/hosts f rw-r--r--|etc/resolv.conf f rw-r--r--"
	tests := []struct {
		name   string
		layers [][]string // topmost first
		want   string     // tree of the init layer, "|"-joined; "" for none
	}{
		{"image has every mount point", [][]string{full}, ""},
		{"spread over layers", [][]string{{"d etc", "f etc/hosts", "d dev"}, {"d etc", "f etc/hostname", "f etc/resolv.conf", "d proc", "d sys"}}, ""},
		{"empty image", [][]string{{}}, all},
		{"no /etc files: /etc keeps the image's mode", [][]string{{"d proc", "d sys", "d dev", "d etc 750", "f etc/passwd"}}, files},
		{"/etc's metadata from the topmost layer", [][]string{{"d proc", "d sys", "d dev", "d etc 750"}, {"d etc 700"}}, files},
		{"whited out above", [][]string{{"d proc", "d sys", "d dev", "d etc 750", "w etc/hosts", "w etc/hostname", "w etc/resolv.conf"}, full}, files},
		{"opaque /etc hides the lower ones", [][]string{{"d proc", "d sys", "d dev", "d etc 750", "o etc"}, full}, files},
		{"opaque root hides the lower layers", [][]string{{"d etc", "o ."}, full}, "dev d rwxr-xr-x|etc d rwxr-xr-x|etc/hostname f rw-r--r--|etc/hosts f rw-r--r--|etc/resolv.conf f rw-r--r--|proc d rwxr-xr-x|sys d rwxr-xr-x"},
		{"a directory above a file hides it", [][]string{{"d proc", "d sys", "d dev", "d etc 750"}, {"f etc"}}, files},
		{"/etc a symlink: left to init", [][]string{{"d proc", "d sys", "d dev", "l etc usr/etc"}}, ""},
		{"/etc a file: left to init", [][]string{{"d proc", "d sys", "d dev", "f etc"}}, ""},
		{"/etc whited out: left to init", [][]string{{"d proc", "d sys", "d dev", "w etc"}, full}, ""},
		{"a symlink at a mount point is the image's", [][]string{{"d proc", "d sys", "d dev", "d etc", "l etc/hosts /x", "l etc/hostname /x", "l etc/resolv.conf /run/resolv.conf"}}, ""},
		{"OCI whiteouts on the way: left to init", [][]string{{"d proc", "d sys", "d dev", "d etc", "f etc/.wh.hosts"}}, ""},
		{"only /proc missing", [][]string{{"d sys", "d dev", "d etc", "f etc/hosts", "f etc/hostname", "f etc/resolv.conf"}}, "proc d rwxr-xr-x"},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, err := OpenStore(t.TempDir())
			if err != nil {
				t.Fatal(err)
			}
			var lower []string
			for _, l := range tt.layers {
				lower = append(lower, makeLayer(t, l...))
			}
			id := "sha256:" + strings.Repeat(string(rune('a'+i%6)), 64)
			dir, err := s.InitLayer(id, lower)
			if err != nil {
				t.Fatal(err)
			}
			if tt.want == "" {
				if dir != "" {
					t.Fatalf("init layer %s with %q, want none", dir, tree(t, dir))
				}
				return
			}
			if dir == "" {
				t.Fatal("no init layer")
			}
			if got := strings.Join(tree(t, dir), "|"); got != tt.want {
				t.Fatalf("init layer:\n%s\nwant\n%s", strings.ReplaceAll(got, "|", "\n"), strings.ReplaceAll(tt.want, "|", "\n"))
			}
			// A second container of the image gets the same one, as made.
			var before unix.Stat_t
			_ = unix.Stat(dir, &before)
			again, err := s.InitLayer(id, lower)
			var after unix.Stat_t
			_ = unix.Stat(again, &after)
			if err != nil || again != dir || after.Ino != before.Ino {
				t.Fatalf("second call: %q, %v; want %q, the same directory", again, err, dir)
			}
			if left, _ := filepath.Glob(filepath.Join(s.initLayerDir(), ".*")); len(left) != 0 {
				t.Fatalf("left behind: %q", left)
			}
		})
	}
}

// TestInitLayerKeepsMetadata checks that a directory on the way is the
// image's copy: owner, mode and times, as a copy-up would keep them.
func TestInitLayerKeepsMetadata(t *testing.T) {
	testutil.RequirePrivileged(t)
	img := makeLayer(t, "d proc", "d sys", "d dev", "d etc 751")
	etc := filepath.Join(img, "etc")
	if err := os.Lchown(etc, 12, 34); err != nil {
		t.Fatal(err)
	}
	mtime := unix.NsecToTimespec(1_000_000_123)
	if err := unix.UtimesNanoAt(unix.AT_FDCWD, etc, []unix.Timespec{mtime, mtime}, 0); err != nil {
		t.Fatal(err)
	}
	s, err := OpenStore(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	dir, err := s.InitLayer("sha256:"+strings.Repeat("1", 64), []string{img})
	if err != nil || dir == "" {
		t.Fatalf("init layer %q, %v", dir, err)
	}
	var st unix.Stat_t
	if err := unix.Lstat(filepath.Join(dir, "etc"), &st); err != nil {
		t.Fatal(err)
	}
	if st.Uid != 12 || st.Gid != 34 || st.Mode&0o7777 != 0o751 || st.Mtim != mtime {
		t.Fatalf("init layer's /etc: uid %d gid %d mode %o mtime %v; want 12 34 751 %v", st.Uid, st.Gid, st.Mode&0o7777, st.Mtim, mtime)
	}
}

func TestInitLayerBadID(t *testing.T) {
	s, err := OpenStore(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	for _, id := range []string{"", "sha256:abc", "sha256:" + strings.Repeat("z", 64), strings.Repeat("a", 64), "sha256:../" + strings.Repeat("a", 61)} {
		if dir, err := s.InitLayer(id, nil); err == nil {
			t.Errorf("InitLayer(%q) = %q, want an error", id, dir)
		}
	}
}

// TestSweepInitLayers checks that a sweep keeps the init layers of images
// that exist and of containers that name them, and removes the rest and
// old leftovers of a killed create; and that a container whose init layer
// was swept from under it gets it back.
func TestSweepInitLayers(t *testing.T) {
	s, err := OpenStore(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	img := makeLayer(t)
	id := func(c string) string { return "sha256:" + strings.Repeat(c, 64) }
	dirs := map[string]string{}
	for _, c := range []string{"a", "b", "c"} {
		if dirs[c], err = s.InitLayer(id(c), []string{img}); err != nil || dirs[c] == "" {
			t.Fatalf("init layer %s: %q, %v", c, dirs[c], err)
		}
	}
	// b's image is gone but a container uses its init layer.
	c := &Container{ID: NewID(), Layers: driver.Layers{Lower: []string{dirs["b"], img}}}
	if err := s.Create(c); err != nil {
		t.Fatal(err)
	}
	old := filepath.Join(s.initLayerDir(), ".tmp-old")
	young := filepath.Join(s.initLayerDir(), ".tmp-young")
	for _, d := range []string{old, young} {
		if err := os.Mkdir(d, 0o700); err != nil {
			t.Fatal(err)
		}
	}
	epoch := unix.NsecToTimespec(0)
	if err := unix.UtimesNanoAt(unix.AT_FDCWD, old, []unix.Timespec{epoch, epoch}, 0); err != nil {
		t.Fatal(err)
	}
	exists := func(x string) bool { return x == id("a") }
	if err := s.SweepInitLayers(exists); err != nil {
		t.Fatal(err)
	}
	for path, want := range map[string]bool{dirs["a"]: true, dirs["b"]: true, dirs["c"]: false, old: false, young: true} {
		if _, err := os.Lstat(path); (err == nil) != want {
			t.Errorf("%s: exists %v, want %v", filepath.Base(path), err == nil, want)
		}
	}
	// c, had its init layer gone, gets it back as it was.
	want := tree(t, dirs["b"])
	if err := os.RemoveAll(dirs["b"]); err != nil {
		t.Fatal(err)
	}
	c.Image = id("b")
	if err := s.EnsureInitLayer(c); err != nil {
		t.Fatal(err)
	}
	if got := tree(t, dirs["b"]); strings.Join(got, "|") != strings.Join(want, "|") {
		t.Fatalf("made again: %q, want %q", got, want)
	}
	if err := s.Delete(c); err != nil {
		t.Fatal(err)
	}
	if err := s.SweepInitLayers(exists); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Lstat(dirs["b"]); err == nil {
		t.Error("b's init layer outlived its last container")
	}
}

// TestUserDB checks which user database the monitor hands init: the files
// the union would show, or nil (init reads them itself) whenever it
// cannot be sure what init would read.
func TestUserDB(t *testing.T) {
	testutil.RequirePrivileged(t) // whiteouts are device nodes
	img := []string{"d etc", "f etc/passwd", "f etc/group", "l link etc", "d proc"}
	big := strings.Repeat("x", maxUserDBFile+1)
	tests := []struct {
		name   string
		upper  []string
		lower  []string
		driver string
		mounts []string
		// want is "passwd|group" as read, "nil" for no database.
		want string
	}{
		{"the image's", nil, img, DriverLaminafs, nil, "image|image"},
		{"kernel overlay too", nil, img, DriverOverlay, nil, "image|image"},
		{"changed in the container's layer", []string{"d etc", "f etc/passwd"}, img, DriverLaminafs, nil, "upper|image"},
		{"removed in the container's layer", []string{"d etc", "w etc/group"}, img, DriverLaminafs, nil, "image|"},
		{"no /etc: an empty database", nil, []string{"d proc"}, DriverLaminafs, nil, "|"},
		{"the default mounts", nil, img, DriverLaminafs, []string{"/proc", "/dev", "/dev/pts", "/sys/fs/cgroup", "/etc/hosts"}, "image|image"},
		{"vfs copies while this reads", nil, img, DriverVFS, nil, "nil"},
		{"a mount over /etc", nil, img, DriverLaminafs, []string{"/etc"}, "nil"},
		{"a mount over /etc/passwd", nil, img, DriverLaminafs, []string{"/etc/passwd"}, "nil"},
		{"a mount through a symlink", nil, img, DriverLaminafs, []string{"/link"}, "nil"},
		{"a mount under a symlink", nil, img, DriverLaminafs, []string{"/link/group"}, "nil"},
		{"passwd a symlink", nil, []string{"d etc", "l etc/passwd /usr/passwd", "f etc/group"}, DriverLaminafs, nil, "nil"},
		{"passwd a directory", nil, []string{"d etc", "d etc/passwd", "f etc/group"}, DriverLaminafs, nil, "nil"},
		{"too large", []string{"d etc", "f etc/passwd " + big}, img, DriverLaminafs, nil, "nil"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			upper := makeLayer(t, tt.upper...)
			lower := makeLayer(t, tt.lower...)
			// makeLayer writes "image" into files; the container's layer
			// says "upper", or what the entry gives.
			for _, e := range tt.upper {
				if f := strings.Fields(e); f[0] == "f" {
					content := "upper"
					if len(f) > 2 {
						content = f[2]
					}
					if err := os.WriteFile(filepath.Join(upper, f[1]), []byte(content), 0o644); err != nil {
						t.Fatal(err)
					}
				}
			}
			c := &Container{Driver: tt.driver, Layers: driver.Layers{Lower: []string{lower}, Upper: upper}}
			spec := &specs.Spec{}
			for _, m := range tt.mounts {
				spec.Mounts = append(spec.Mounts, specs.Mount{Destination: m, Type: "bind", Source: "/x"})
			}
			db := userDB(c, spec)
			got := "nil"
			if db != nil {
				got = string(db.Passwd) + "|" + string(db.Group)
			}
			if got != tt.want {
				t.Fatalf("user database %.40q, want %q", got, tt.want)
			}
		})
	}
}

// TestLayerWalkMemo: a layerWalk remembers the directories it has gone
// through; what it finds must not depend on what it looked up before.
// Every path is looked up in a fresh walk and in one shared by all, in
// both orders, and a few results are checked outright.
func TestLayerWalkMemo(t *testing.T) {
	testutil.RequirePrivileged(t) // whiteouts are device nodes
	upper := makeLayer(t, "d a", "o a", "f a/x", "d b", "w b/gone", "d b/sub", "f c", "d e", "l e/l /etc")
	mid := makeLayer(t, "d a", "f a/y", "d b", "f b/gone", "d b/sub", "f b/sub/m", "d b/a", "f b/a/y", "d c", "f c/z", "d d", "f d/w")
	lower := makeLayer(t, "d b", "d b/sub", "f b/sub/n", "d d", "w d/w", "f d/v", "d e", "d e/deep", "f e/deep/f")
	layers := []string{upper, mid, lower}
	paths := []string{"a/x", "a/y", "b/gone", "b/sub/m", "b/sub/n", "c/z", "c", "d/w", "d/v", "e/l", "e/deep/f", "e/l/x", "missing/x", "b/sub/none", "a", "b/a/y"}
	type res struct {
		found bool
		at    string
		par   string
		ok    bool
	}
	look := func(w *layerWalk, p string) res {
		found, at, parents, ok := w.lookup(p)
		return res{found, at, strings.Join(parents, ","), ok}
	}
	fresh := map[string]res{}
	for _, p := range paths {
		fresh[p] = look(newLayerWalk(layers), p)
	}
	for _, order := range [][]string{paths, reversed(paths)} {
		w := newLayerWalk(layers)
		for _, p := range order {
			if got := look(w, p); got != fresh[p] {
				t.Errorf("%s after other lookups: %+v, alone: %+v", p, got, fresh[p])
			}
		}
	}
	for p, want := range map[string]res{
		"a/x":      {true, filepath.Join(upper, "a/x"), filepath.Join(upper, "a"), true},
		"a/y":      {false, "", filepath.Join(upper, "a"), true}, // opaque a hides mid's
		"b/gone":   {false, "", filepath.Join(upper, "b"), true}, // whited out
		"b/sub/n":  {true, filepath.Join(lower, "b/sub/n"), filepath.Join(upper, "b") + "," + filepath.Join(upper, "b/sub"), true},
		"c/z":      {false, "", "", false}, // through a file
		"b/a/y":    {true, filepath.Join(mid, "b/a/y"), filepath.Join(upper, "b") + "," + filepath.Join(mid, "b/a"), true},
		"d/w":      {true, filepath.Join(mid, "d/w"), filepath.Join(mid, "d"), true},
		"d/v":      {true, filepath.Join(lower, "d/v"), filepath.Join(mid, "d"), true},
		"e/l/x":    {false, "", "", false}, // through a symlink
		"e/deep/f": {true, filepath.Join(lower, "e/deep/f"), filepath.Join(upper, "e") + "," + filepath.Join(lower, "e/deep"), true},
	} {
		if fresh[p] != want {
			t.Errorf("%s: %+v, want %+v", p, fresh[p], want)
		}
	}
}

func reversed(s []string) []string {
	out := make([]string, len(s))
	for i, v := range s {
		out[len(s)-1-i] = v
	}
	return out
}
