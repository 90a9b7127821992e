package runtime

import (
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/lamina-project/lamina/internal/testutil"
	"github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"
)

// Names are checked against every container, those made before name files
// existed included, and a rename cut short between its steps leaves the
// container findable by its new name and the old name free.
func TestContainerNames(t *testing.T) {
	s, err := OpenStore(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	create := func(name string) *Container {
		t.Helper()
		c := &Container{ID: NewID(), Name: name}
		if err := s.Create(c); err != nil {
			t.Fatalf("create %q: %v", name, err)
		}
		return c
	}
	a := create("alpha")
	legacy := create("legacy")
	// A container from before name files: config.json only.
	if err := os.Remove(legacy.File("name")); err != nil {
		t.Fatal(err)
	}
	gen := create("")
	if gen.Name == "" || !validName(gen.Name) {
		t.Fatalf("generated name %q", gen.Name)
	}
	for _, tc := range []struct {
		name string
		want error
	}{{"alpha", ErrNameInUse}, {"legacy", ErrNameInUse}, {gen.Name, ErrNameInUse}, {"beta", nil}} {
		err := s.Create(&Container{ID: NewID(), Name: tc.name})
		if !errors.Is(err, tc.want) {
			t.Errorf("create %q: %v, want %v", tc.name, err, tc.want)
		}
	}
	// A create gave the older container its name file.
	if b, err := os.ReadFile(legacy.File("name")); err != nil || string(b) != "legacy" {
		t.Errorf("the older container's name file: %q, %v", b, err)
	}
	for ref, want := range map[string]string{"alpha": a.ID, "/legacy": legacy.ID, a.ID[:12]: a.ID, a.ID: a.ID} {
		c, err := s.Get(ref)
		if err != nil || c.ID != want {
			t.Errorf("get %q: %v, %v; want %s", ref, c, err, want[:12])
		}
	}
	if _, err := s.Get("nosuch"); !errors.Is(err, ErrNoSuchContainer) {
		t.Errorf("get nosuch: %v", err)
	}

	if err := s.Rename(a, "gamma"); err != nil {
		t.Fatal(err)
	}
	if err := s.Rename(legacy, "gamma"); !errors.Is(err, ErrNameInUse) {
		t.Errorf("rename to a taken name: %v", err)
	}
	// A rename cut short after config.json: no name file.
	if err := os.Remove(a.File("name")); err != nil {
		t.Fatal(err)
	}
	if c, err := s.Get("gamma"); err != nil || c.ID != a.ID {
		t.Errorf("get gamma after an interrupted rename: %v, %v", c, err)
	}
	if err := s.Create(&Container{ID: NewID(), Name: "alpha"}); err != nil {
		t.Errorf("the old name is still taken after a rename: %v", err)
	}
	if err := s.Create(&Container{ID: NewID(), Name: "gamma"}); !errors.Is(err, ErrNameInUse) {
		t.Errorf("create gamma after an interrupted rename: %v", err)
	}
	if err := s.Delete(a); err != nil {
		t.Fatal(err)
	}
	if err := s.Create(&Container{ID: NewID(), Name: "gamma"}); err != nil {
		t.Errorf("a removed container's name is still taken: %v", err)
	}
}

// Unlist makes a container gone for every lookup at once (its name free);
// reclaim then removes its files, and what a removal that died half-way
// left.
func TestUnlist(t *testing.T) {
	s, err := OpenStore(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	c := &Container{ID: NewID(), Name: "rm-me"}
	if err := s.Create(c); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(c.File("data"), []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}
	// A removal that died between its two steps.
	dead := filepath.Join(s.dir, removingPrefix+NewID())
	if err := os.MkdirAll(filepath.Join(dead, "upper", "etc"), 0o700); err != nil {
		t.Fatal(err)
	}
	reclaim, err := s.Unlist(c)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Get(c.ID); !errors.Is(err, ErrNoSuchContainer) {
		t.Errorf("get of an unlisted container: %v", err)
	}
	if l, err := s.List(); err != nil || len(l) != 0 {
		t.Errorf("list after unlist: %v, %v", l, err)
	}
	if err := s.Create(&Container{ID: NewID(), Name: "rm-me"}); err != nil {
		t.Errorf("the unlisted container's name is not free: %v", err)
	}
	if err := reclaim(); err != nil {
		t.Fatal(err)
	}
	ents, _ := os.ReadDir(s.dir)
	for _, e := range ents {
		if strings.HasPrefix(e.Name(), removingPrefix) {
			t.Errorf("%s left after reclaim", e.Name())
		}
	}
}

// A record keeps the options a container was made with, not its runtime
// spec, which a start builds from them (RuntimeSpec) without looking at
// the host again; a record from before that keeps its spec, which is what
// such a container runs with, through loads and saves. Bind mounts show
// whether or not their sources remain.
func TestRecordSpec(t *testing.T) {
	s, err := OpenStore(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	src := t.TempDir()
	opts := Options{Args: []string{"/bin/sh", "-c", "true"}, Env: []string{"A=1"}, Hostname: "h1",
		CapDrop: []string{"NET_RAW"}, Memory: 64 << 20, Binds: []string{src + ":/data:ro"}}
	c := &Container{ID: NewID(), Name: "now", Run: opts}
	if err := s.Create(c); err != nil {
		t.Fatal(err)
	}
	want, err := NewSpec(c.ID, c.File("merged"), opts)
	if err != nil {
		t.Fatal(err)
	}
	record, err := os.ReadFile(c.File("config.json"))
	if err != nil {
		t.Fatal(err)
	}
	var fields map[string]json.RawMessage
	if err := json.Unmarshal(record, &fields); err != nil {
		t.Fatal(err)
	}
	if _, ok := fields["Spec"]; ok {
		t.Errorf("the record holds a runtime spec: %.200s", record)
	}
	loaded, got := loadSpec(t, s, c.ID)
	if !reflect.DeepEqual(got, want) {
		t.Errorf("spec built from the record:\n%+v\nwant\n%+v", got, want)
	}
	wantBind := []specs.Mount{{Destination: "/data", Type: "bind", Source: src, Options: []string{"rbind", "rprivate", "ro"}}}
	if b := loaded.BindMounts(); !reflect.DeepEqual(b, wantBind) {
		t.Errorf("bind mounts %+v, want %+v", b, wantBind)
	}
	// A bind source gone: the spec is built all the same (a start then
	// fails in init's mount; an exec does not care), and the mount shows.
	if err := os.Remove(src); err != nil {
		t.Fatal(err)
	}
	if _, err := NewSpec(c.ID, c.File("merged"), opts); err == nil || !strings.Contains(err.Error(), "invalid volume specification") {
		t.Errorf("a create with the bind source gone: %v", err)
	}
	gone, goneSpec := loadSpec(t, s, c.ID)
	if !reflect.DeepEqual(goneSpec, want) {
		t.Errorf("spec with its bind source gone:\n%+v\nwant\n%+v", goneSpec, want)
	}
	if b := gone.BindMounts(); !reflect.DeepEqual(b, wantBind) {
		t.Errorf("bind mounts with the source gone %+v, want %+v", b, wantBind)
	}

	// An older record: its spec, no options. Its hostname is one NewSpec
	// would not give it.
	old := &Container{ID: NewID(), Name: "old"}
	if err := s.Create(old); err != nil {
		t.Fatal(err)
	}
	oldSpec, err := NewSpec(old.ID, old.File("merged"), Options{Args: []string{"/bin/true"}, Hostname: "legacy-host", Binds: []string{t.TempDir() + ":/x"}})
	if err != nil {
		t.Fatal(err)
	}
	var rec map[string]any
	b, err := json.Marshal(old)
	if err == nil {
		err = json.Unmarshal(b, &rec)
	}
	if err != nil {
		t.Fatal(err)
	}
	delete(rec, "Run")
	rec["Spec"] = oldSpec
	if b, err = json.Marshal(rec); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(old.File("config.json"), b, 0o600); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 2; i++ { // as loaded, then after a rename saved it
		l, got := loadSpec(t, s, old.ID)
		if !reflect.DeepEqual(got, oldSpec) {
			t.Errorf("pass %d: the older record's spec:\n%+v\nwant\n%+v", i, got, oldSpec)
		}
		if b := l.BindMounts(); len(b) != 1 || b[0].Destination != "/x" {
			t.Errorf("pass %d: the older record's bind mounts: %+v", i, b)
		}
		if i == 0 {
			if err := s.Rename(l, "older"); err != nil {
				t.Fatal(err)
			}
		}
	}
}

// loadSpec loads container id and its runtime spec.
func loadSpec(t *testing.T, s *Store, id string) (*Container, *specs.Spec) {
	t.Helper()
	c, err := s.Load(id)
	if err != nil {
		t.Fatal(err)
	}
	spec, err := c.RuntimeSpec()
	if err != nil {
		t.Fatal(err)
	}
	return c, spec
}

// mountSentinel makes target and bind-mounts on it a directory holding
// the file it returns, which nothing that removes through the mount must
// take; the mount goes at the test's end.
func mountSentinel(t *testing.T, target string) string {
	t.Helper()
	src := t.TempDir()
	sentinel := filepath.Join(src, "keep")
	if err := os.WriteFile(sentinel, []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(target, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := unix.Mount(src, target, "", unix.MS_BIND, ""); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = unmountAll(target) })
	return sentinel
}

// TestSweepRemoved: a removal's leftover directory is removed by the next
// sweep, but not while its monitor lives (the monitor unmounts the union
// there, then removes it), and never through a mount left in it: what a
// dead monitor left mounted is unmounted first.
func TestSweepRemoved(t *testing.T) {
	testutil.RequirePrivileged(t)
	s, err := OpenStore(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	gone := filepath.Join(s.dir, removingPrefix+NewID())
	merged := filepath.Join(gone, "merged")
	sentinel := mountSentinel(t, merged)
	lock, err := os.OpenFile(filepath.Join(gone, "monitor.lock"), os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	if err := unix.Flock(int(lock.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		t.Fatal(err)
	}
	s.sweepRemoved()
	if _, err := os.Stat(filepath.Join(merged, "keep")); err != nil {
		t.Fatalf("a live monitor's directory was swept: %v", err)
	}
	lock.Close() // the monitor dies, its union mounted
	s.sweepRemoved()
	if _, err := os.Stat(gone); !os.IsNotExist(err) {
		t.Errorf("the dead monitor's directory is still there: %v", err)
	}
	if _, err := os.Stat(sentinel); err != nil {
		t.Errorf("the sweep removed a file through the mount: %v", err)
	}
}

// TestUnlistExitedMounted: an exited container unlisted with its union
// still mounted (the monitor unmounts after the exit status is out)
// moves with the mount; its reclaim unmounts what is left before it
// removes anything, never through the mount.
func TestUnlistExitedMounted(t *testing.T) {
	testutil.RequirePrivileged(t)
	s, err := OpenStore(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	c := &Container{ID: NewID(), Name: "mounted"}
	if err := s.Create(c); err != nil {
		t.Fatal(err)
	}
	sentinel := mountSentinel(t, c.File("merged"))
	t.Cleanup(func() { _ = unmountAll(c.File("merged")) }) // where it moved
	reclaim, err := s.UnlistExited(c)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Get(c.ID); !errors.Is(err, ErrNoSuchContainer) {
		t.Errorf("unlisted container still found: %v", err)
	}
	if _, err := os.Stat(filepath.Join(c.File("merged"), "keep")); err != nil {
		t.Fatalf("the mount did not move with the directory: %v", err)
	}
	if err := reclaim(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(sentinel); err != nil {
		t.Errorf("the reclaim removed a file through the mount: %v", err)
	}
	if _, err := os.Stat(c.File("")); !os.IsNotExist(err) {
		t.Errorf("the container's directory is still there: %v", err)
	}
}
