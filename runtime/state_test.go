package runtime

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
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
