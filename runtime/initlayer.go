package runtime

import (
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/lamina-project/lamina/cow"
	"golang.org/x/sys/unix"
)

// An init layer holds the mount points that every container's start
// mounts or binds over and that its image lacks (initLayerPaths): /proc,
// /sys, /dev, /etc/hosts, /etc/hostname and /etc/resolv.conf. It sits between the
// image's layers and the container's own, as docker's "-init" layer does,
// so that a start writes nothing into the container's layer: without it,
// init made them through the union on every start (for an image without
// the /etc files, a copy-up of /etc and three new files, 1-2 ms of the
// start on this project's test machine), and they showed in the
// container's changes.
//
// Its content follows from the image's layers alone, so the containers of
// an image share one: containers/.init/<image digest's hex>, made by the
// first create that needs it in a directory of its own and renamed into
// place whole. A directory on the way keeps the image's metadata (a
// copy-up, as the union would have made); one the image lacks is made
// 0755 and root's. A path the image has, or reaches through anything but
// plain directories (a symlink, a whiteout, a redirect), is left alone:
// init then makes it through the union, as before.

// initPath is a mount point an init layer provides, relative to the root.
type initPath struct {
	rel string
	dir bool
}

// initLayerPaths are the mount points every start makes: the directories
// of the default mounts at the root (/proc, /dev, /sys; those below them
// are in what these mount), and the files of hostFiles.
func initLayerPaths() []initPath {
	var ps []initPath
	for _, m := range defaultMounts(false) {
		if rel := strings.TrimPrefix(m.Destination, "/"); !strings.Contains(rel, "/") {
			ps = append(ps, initPath{rel, true})
		}
	}
	for _, f := range hostFiles {
		ps = append(ps, initPath{strings.TrimPrefix(f.dest, "/"), false})
	}
	return ps
}

// initLayerDir is where init layers are kept.
func (s *Store) initLayerDir() string { return filepath.Join(s.dir, ".init") }

// InitLayer returns the init layer of the image imageID (a digest, such as
// "sha256:<hex>") whose layers are lower (topmost first), making it if no
// container made it before; "" when the image lacks none of the mount
// points.
func (s *Store) InitLayer(imageID string, lower []string) (string, error) {
	_, hexID, ok := strings.Cut(imageID, ":")
	if !ok || len(hexID) != 64 {
		return "", fmt.Errorf("init layer: bad image ID %q", imageID)
	}
	if _, err := hex.DecodeString(hexID); err != nil {
		return "", fmt.Errorf("init layer: bad image ID %q", imageID)
	}
	dir := filepath.Join(s.initLayerDir(), hexID)
	if _, err := os.Lstat(dir); err == nil {
		return dir, nil
	}
	plan := planInitLayer(lower)
	if len(plan) == 0 {
		return "", nil
	}
	if err := os.MkdirAll(s.initLayerDir(), 0o700); err != nil {
		return "", fmt.Errorf("init layer: %w", err)
	}
	tmp, err := os.MkdirTemp(s.initLayerDir(), ".tmp-")
	if err != nil {
		return "", fmt.Errorf("init layer: %w", err)
	}
	defer os.RemoveAll(tmp) // only left when the rename failed
	if err := buildInitLayer(tmp, plan); err != nil {
		return "", fmt.Errorf("init layer: %w", err)
	}
	if err := os.Rename(tmp, dir); err != nil {
		// Another create made it first: theirs has the same content.
		if _, serr := os.Lstat(dir); serr == nil {
			return dir, nil
		}
		return "", fmt.Errorf("init layer: %w", err)
	}
	return dir, nil
}

// initStep is one object of an init layer: its path, and where its
// metadata comes from ("" for a new directory or file).
type initStep struct {
	rel string
	dir bool
	src string
}

// planInitLayer lists what an init layer over lower needs, parents first.
func planInitLayer(lower []string) []initStep {
	var plan []initStep
	planned := map[string]bool{}
	w := newLayerWalk(lower)
	for _, p := range initLayerPaths() {
		found, _, parents, ok := w.lookup(p.rel)
		if found || !ok {
			continue
		}
		parts := strings.Split(p.rel, "/")
		for i := range parts[:len(parts)-1] {
			rel := strings.Join(parts[:i+1], "/")
			if !planned[rel] {
				planned[rel] = true
				plan = append(plan, initStep{rel: rel, dir: true, src: parents[i]})
			}
		}
		if !planned[p.rel] {
			planned[p.rel] = true
			plan = append(plan, initStep{rel: p.rel, dir: p.dir})
		}
	}
	return plan
}

// layerWalk looks paths up in the union of layers (topmost first, in
// kernel overlay's format) without mounting it. It remembers what it has
// read of each directory on the way, so that looking up many paths under
// the same few directories (a spec's mount points: /dev/pts, /dev/shm,
// /etc/hosts, ...) reads each once: a container's start does about a
// dozen such lookups.
type layerWalk struct {
	layers []string
	oci    map[string]bool     // hasOCIWhiteouts of the directories seen
	dirs   map[string]walkStep // the steps into the directories seen, by relative path
	root   *walkStep
}

// walkStep is what a lookup finds of a directory on its way: the layers'
// copies of it that show (topmost first; none where the layers lack it),
// or ok false when the way goes through what the walk does not follow.
type walkStep struct {
	visible []string
	ok      bool
}

func newLayerWalk(layers []string) *layerWalk {
	return &layerWalk{layers: layers, oci: map[string]bool{}, dirs: map[string]walkStep{}}
}

// hasOCI is hasOCIWhiteouts(dir), read once per directory.
func (w *layerWalk) hasOCI(dir string) bool {
	has, seen := w.oci[dir]
	if !seen {
		has = hasOCIWhiteouts(dir)
		w.oci[dir] = has
	}
	return has
}

// lookup resolves rel (clean, relative) as kernel overlay would: found
// says rel exists, at is its topmost copy; parents[i] is the topmost
// layer's copy of the i-th directory on the way ("" where the layers lack
// it, and for those below it). ok is false when the way goes through what
// this does not follow: a non-directory, a whiteout of a parent, a
// redirect, OCI whiteout files.
func (w *layerWalk) lookup(rel string) (found bool, at string, parents []string, ok bool) {
	parts := strings.Split(rel, "/")
	parents = make([]string, len(parts)-1)
	d := w.rootStep()
	if !d.ok {
		return false, "", nil, false
	}
	for i, name := range parts[:len(parts)-1] {
		prefix := strings.Join(parts[:i+1], "/")
		next, seen := w.dirs[prefix]
		if !seen {
			next = w.step(d.visible, name)
			w.dirs[prefix] = next
		}
		if !next.ok {
			return false, "", nil, false
		}
		if len(next.visible) > 0 {
			parents[i] = next.visible[0]
		}
		d = next
	}
	// The last name: its topmost copy, unless a whiteout hides it.
	for _, l := range d.visible {
		p := filepath.Join(l, parts[len(parts)-1])
		var st unix.Stat_t
		if err := unix.Lstat(p, &st); err != nil {
			if errors.Is(err, unix.ENOENT) {
				continue
			}
			return false, "", nil, false // unreadable: leave it to init
		}
		if cow.IsWhiteoutStat(&st) {
			break
		}
		return true, p, parents, true
	}
	return false, "", parents, true
}

// rootStep is the step into the layers' roots: those that show.
func (w *layerWalk) rootStep() walkStep {
	if w.root == nil {
		ns := cow.DefaultNS()
		root := walkStep{visible: make([]string, 0, len(w.layers)), ok: true}
		for _, l := range w.layers {
			if w.hasOCI(l) {
				root = walkStep{}
				break
			}
			root.visible = append(root.visible, l)
			if ns.IsOpaque(l) {
				break
			}
		}
		w.root = &root
	}
	return *w.root
}

// step is the step from a directory, whose copies visible are, into its
// entry name, a directory on the way to what is looked up.
func (w *layerWalk) step(visible []string, name string) walkStep {
	ns := cow.DefaultNS()
	next := walkStep{ok: true}
	for _, l := range visible {
		p := filepath.Join(l, name)
		var st unix.Stat_t
		if err := unix.Lstat(p, &st); err != nil {
			if errors.Is(err, unix.ENOENT) {
				continue
			}
			return walkStep{} // unreadable: leave it to init
		}
		if cow.IsWhiteoutStat(&st) || st.Mode&unix.S_IFMT != unix.S_IFDIR {
			if len(next.visible) > 0 {
				// The end of the directory above: a whiteout or a
				// non-directory hides what is below.
				break
			}
			return walkStep{}
		}
		if ns.Redirect(p) != "" || w.hasOCI(p) {
			return walkStep{}
		}
		next.visible = append(next.visible, p)
		if ns.IsOpaque(p) {
			break
		}
	}
	return next
}

// hasOCIWhiteouts reports whether dir holds OCI whiteout files, which
// layerWalk does not interpret (lamina's layers have kernel overlay's
// whiteouts; the union reads both).
func hasOCIWhiteouts(dir string) bool {
	f, err := os.Open(dir)
	if err != nil {
		return true
	}
	defer f.Close()
	names, err := f.Readdirnames(-1)
	if err != nil {
		return true
	}
	for _, n := range names {
		if strings.HasPrefix(n, cow.OCIWhiteoutPrefix) {
			return true
		}
	}
	return false
}

// buildInitLayer makes plan's objects in dir.
func buildInitLayer(dir string, plan []initStep) error {
	work, err := os.MkdirTemp(filepath.Dir(dir), ".work-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(work)
	for _, st := range plan {
		path := filepath.Join(dir, st.rel)
		switch {
		case st.src != "":
			// The image's directory, without its children (a copy-up).
			d, err := unix.Open(filepath.Dir(path), unix.O_DIRECTORY|unix.O_RDONLY|unix.O_CLOEXEC, 0)
			if err != nil {
				return err
			}
			err = cow.CopyUp(st.src, work, d, filepath.Base(path), false)
			unix.Close(d)
			if err != nil {
				return err
			}
		case st.dir:
			if err := os.Mkdir(path, 0o755); err != nil {
				return err
			}
		default:
			f, err := os.OpenFile(path, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o644)
			if err != nil {
				return err
			}
			if err := f.Close(); err != nil {
				return err
			}
		}
	}
	// Making their children changed the copied directories' times: they
	// get the image's metadata again, deepest first.
	for i := len(plan) - 1; i >= 0; i-- {
		if st := plan[i]; st.src != "" {
			var src unix.Stat_t
			if err := unix.Lstat(st.src, &src); err != nil {
				return err
			}
			if err := cow.ApplyMeta(filepath.Join(dir, st.rel), cow.MetaFromStat(&src)); err != nil {
				return err
			}
		}
	}
	// A container's root shows its own layer's attributes, not this one's;
	// 0755 is what a layer root has (MkdirTemp made it 0700).
	return os.Chmod(dir, 0o755)
}

// EnsureInitLayer makes c's init layer again when it is gone: a sweep
// that raced c's create (which then fails, its image gone, unless the
// image came back), or a hand. Nothing to do, and one stat, for the rest.
func (s *Store) EnsureInitLayer(c *Container) error {
	l := c.Layers.Lower
	if len(l) < 2 || filepath.Dir(l[0]) != s.initLayerDir() {
		return nil
	}
	if _, err := os.Lstat(l[0]); !errors.Is(err, os.ErrNotExist) {
		return nil
	}
	dir, err := s.InitLayer(c.Image, l[1:])
	if err != nil {
		return err
	}
	if dir != l[0] {
		return fmt.Errorf("init layer %s: gone, and image %s makes %q", l[0], c.Image, dir)
	}
	return nil
}

// SweepInitLayers removes the init layers of images that no longer exist
// (imageExists) and that no container's layers name, and what a create
// killed while making one left behind (after a minute: a create may still
// be making it). A create that raced the sweep fails, its image gone; if
// the image came back in between, EnsureInitLayer makes the layer again.
func (s *Store) SweepInitLayers(imageExists func(id string) bool) error {
	entries, err := os.ReadDir(s.initLayerDir())
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("init layers: %w", err)
	}
	cs, err := s.List()
	if err != nil {
		return err
	}
	used := map[string]bool{}
	for _, c := range cs {
		for _, l := range c.Layers.Lower {
			used[l] = true
		}
	}
	var errs []error
	for _, e := range entries {
		path := filepath.Join(s.initLayerDir(), e.Name())
		if strings.HasPrefix(e.Name(), ".") {
			if fi, err := e.Info(); err == nil && time.Since(fi.ModTime()) > time.Minute {
				errs = append(errs, os.RemoveAll(path))
			}
			continue
		}
		if used[path] || imageExists("sha256:"+e.Name()) {
			continue
		}
		errs = append(errs, os.RemoveAll(path))
	}
	return errors.Join(errs...)
}
