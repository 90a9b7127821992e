package cli

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"text/tabwriter"

	"github.com/opencontainers/go-digest"
	"github.com/spf13/cobra"

	"github.com/lamina-project/lamina/driver"
	"github.com/lamina-project/lamina/hostmount"
	"github.com/lamina-project/lamina/layerstore"
	"github.com/lamina-project/lamina/runtime"
)

// mountCommands returns mount, unmount (umount) and the image layers
// listing: the commands for inspecting images on the host.
func mountCommands(app *App) []*cobra.Command {
	return []*cobra.Command{newMountCmd(app), newUnmountCmd(app), newLayersCmd(app)}
}

// laminafsPath finds the laminafs binary: next to lamina, else in $PATH.
func laminafsPath() string {
	if exe, err := os.Executable(); err == nil {
		p := filepath.Join(filepath.Dir(exe), "laminafs")
		if _, err := os.Stat(p); err == nil {
			return p
		}
	}
	if p, err := exec.LookPath("laminafs"); err == nil {
		return p
	}
	return "laminafs"
}

func openMounts(app *App) (*hostmount.Manager, error) {
	return hostmount.New(app.Root, driver.FUSEBinary{DriverName: "laminafs", Path: laminafsPath()})
}

// mountHolder is the name under which a host mount holds its image's
// layers in the store, as a container would.
func mountHolder(key string) string { return "mount:" + key }

// holderGone reports whether the holder of a container ref in the layer
// store is gone for good, so that garbage collection may drop the ref: a
// container whose directory is gone, or a host mount with no live record
// (unmounted, or its server dead). When it cannot tell, the holder stays.
func holderGone(app *App, holder string) bool {
	if key, ok := strings.CutPrefix(holder, "mount:"); ok {
		m, err := openMounts(app)
		if err != nil {
			return false
		}
		r, err := m.Get(key)
		return err == nil && r == nil
	}
	_, err := os.Lstat(filepath.Join(app.Root, "containers", holder))
	return errors.Is(err, os.ErrNotExist)
}

func newMountCmd(app *App) *cobra.Command {
	var layer int
	c := &cobra.Command{
		Use:   "mount [OPTIONS] [IMAGE|CONTAINER [DIR]]",
		Short: "Mount an image's or a container's union view on the host, or list mounts",
		Long: `Mount an image's union view read-only on the host (or, with --layer N,
its N-th layer alone, counting from 1 at the bottom) and print where it is.
A container's view is its live, writable root filesystem: a running
container's is already mounted by its monitor; a stopped one's is mounted
in its place. Mounts are served by a background laminafs process and stay
until 'lamina unmount'. With no argument, list what is mounted.`,
		Args: cobra.MaximumNArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			m, err := openMounts(app)
			if err != nil {
				return err
			}
			if len(args) == 0 {
				return listMounts(app, m)
			}
			dir := ""
			if len(args) == 2 {
				dir = args[1]
			}
			if done, err := mountContainer(app, m, args[0], dir, cmd.Flags().Changed("layer")); done || err != nil {
				return err
			}
			s, err := openStore(app)
			if err != nil {
				return err
			}
			defer s.Close()
			img, err := s.ResolveImage(args[0])
			if err != nil {
				return err
			}
			r := hostmount.Record{Kind: "image", Ref: img.ID.String(), Name: args[0], Key: img.ID.Encoded(), Target: dir}
			lowers := img.LowerDirs(s)
			if cmd.Flags().Changed("layer") {
				if layer < 1 || layer > len(img.Layers) {
					return fmt.Errorf("mount %s: --layer %d: the image has layers 1 to %d", args[0], layer, len(img.Layers))
				}
				r.Kind, r.Layer = "layer", layer
				r.Key = fmt.Sprintf("%s:layer%d", img.ID.Encoded(), layer)
				lowers = []string{s.LayerDir(img.Layers[layer-1].ChainID)}
			}
			if len(lowers) == 0 {
				return fmt.Errorf("mount %s: the image has no layers", args[0])
			}
			holder := mountHolder(r.Key)
			rec, err := m.Mount(r, driver.Layers{Lower: lowers},
				func() error { return s.AddContainerRef(img.ID, holder) },
				func() error { return s.RemoveContainerRef(img.ID, holder) })
			if err != nil {
				return fmt.Errorf("mount %s: %w", args[0], err)
			}
			fmt.Fprintln(app.Stdout, rec.Target)
			return nil
		},
	}
	c.Flags().IntVar(&layer, "layer", 0, "mount only the N-th layer (1 = bottom)")
	return c
}

// containerIsRunning reports whether the container with ID id runs. Host
// mounts hold images under "mount:" names, which are never running.
func containerIsRunning(app *App, id string) bool {
	rs, err := runtime.OpenStore(app.Root)
	if err != nil {
		return false
	}
	c, err := rs.Get(id)
	if err != nil {
		return false
	}
	st, err := rs.State(c)
	return err == nil && st.Running
}

// mountContainer mounts the container ref names, if it names one, and
// reports whether it did. A running container's live view is already on
// the host, served by its monitor at <container>/merged: that path is the
// answer. A stopped one's layers (its read-write layer on top) are mounted
// read-write at the same place, so that starting the container takes the
// mount over and removing it cleans it up.
func mountContainer(app *App, m *hostmount.Manager, ref, dir string, layer bool) (bool, error) {
	rs, err := runtime.OpenStore(app.Root)
	if err != nil {
		return false, err
	}
	c, err := rs.Get(ref)
	if err != nil {
		return false, nil // not a container: maybe an image
	}
	if layer {
		return true, fmt.Errorf("mount %s: --layer is for images, and %s is a container", ref, ref)
	}
	merged := c.File("merged")
	if dir != "" {
		if abs, _ := filepath.Abs(dir); abs != merged {
			return true, fmt.Errorf("mount %s: a container's view is mounted at %s; DIR is for images", ref, merged)
		}
	}
	st, err := rs.State(c)
	if err != nil {
		return true, err
	}
	if st.Running {
		fmt.Fprintln(app.Stdout, merged)
		return true, nil
	}
	if err := os.MkdirAll(merged, 0o755); err != nil {
		return true, err
	}
	if err := rs.EnsureInitLayer(c); err != nil {
		return true, err
	}
	rec, err := m.Mount(hostmount.Record{Kind: "container", Ref: c.ID, Name: ref, Key: c.ID, Target: merged}, c.Layers, nil, nil)
	if err != nil {
		return true, fmt.Errorf("mount %s: %w", ref, err)
	}
	fmt.Fprintln(app.Stdout, rec.Target)
	return true, nil
}

func listMounts(app *App, m *hostmount.Manager) error {
	recs, err := m.List()
	if err != nil {
		return err
	}
	w := tabwriter.NewWriter(app.Stdout, 0, 8, 3, ' ', 0)
	fmt.Fprintln(w, "ID\tTYPE\tNAME\tMOUNTPOINT")
	for _, r := range recs {
		id := r.Ref
		if d, err := digest.Parse(r.Ref); err == nil {
			id = layerstore.ShortID(d)
		} else if len(id) > 12 {
			id = id[:12]
		}
		kind := r.Kind
		if r.Kind == "layer" {
			kind = "layer " + strconv.Itoa(r.Layer)
		}
		fmt.Fprintf(w, "%s\t%s\t%s\t%s\n", id, kind, r.Name, r.Target)
	}
	return w.Flush()
}

func newUnmountCmd(app *App) *cobra.Command {
	var all bool
	c := &cobra.Command{
		Use:     "unmount [OPTIONS] IMAGE|CONTAINER|DIR [...]",
		Aliases: []string{"umount"},
		Short:   "Unmount what lamina mount mounted",
		RunE: func(cmd *cobra.Command, args []string) error {
			if len(args) == 0 && !all {
				return &StatusError{Code: 125, Err: errors.New("unmount: name an image, container or directory, or use --all")}
			}
			m, err := openMounts(app)
			if err != nil {
				return err
			}
			s, err := openStore(app)
			if err != nil {
				return err
			}
			defer s.Close()
			rs, err := runtime.OpenStore(app.Root)
			if err != nil {
				return err
			}
			release := func(r *hostmount.Record) error {
				if r.Kind == "container" {
					return nil
				}
				return s.RemoveContainerRef("", mountHolder(r.Key))
			}
			if all {
				recs, err := m.List()
				if err != nil {
					return err
				}
				for _, r := range recs {
					args = append(args, r.Key)
				}
			}
			var failed error
			for _, a := range args {
				key := a
				if c, err := rs.Get(a); err == nil {
					key = c.ID
				} else if img, err := s.ResolveImage(a); err == nil {
					key = img.ID.Encoded()
				}
				r, err := m.Unmount(key, release)
				if errors.Is(err, hostmount.ErrNotMounted) {
					// An image mounted only by layer, or a directory.
					r, err = m.Unmount(a, release)
				}
				if err != nil {
					failed = fmt.Errorf("unmount %s: %w", a, err)
					fmt.Fprintf(app.Stderr, "lamina: %v\n", failed)
					continue
				}
				fmt.Fprintln(app.Stdout, r.Target)
			}
			if failed != nil {
				return &StatusError{Code: 125}
			}
			return nil
		},
	}
	c.Flags().BoolVarP(&all, "all", "a", false, "unmount everything lamina mounted")
	return c
}

// newLayersCmd is `lamina layers IMAGE` (also `lamina image layers`):
// each layer's number, diff ID, size, file count and directory on disk.
func newLayersCmd(app *App) *cobra.Command {
	var noTrunc bool
	c := &cobra.Command{
		Use:   "layers [OPTIONS] IMAGE",
		Short: "Show an image's layers: diff ID, size, file count and where each lives on disk",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			s, err := openStore(app)
			if err != nil {
				return err
			}
			defer s.Close()
			img, err := s.ResolveImage(args[0])
			if err != nil {
				return err
			}
			w := tabwriter.NewWriter(app.Stdout, 0, 8, 3, ' ', 0)
			fmt.Fprintln(w, "LAYER\tDIFF ID\tSIZE\tFILES\tPATH")
			for i, l := range img.Layers {
				id := l.DiffID.String()
				if !noTrunc {
					id = layerstore.ShortID(l.DiffID)
				}
				dir := s.LayerDir(l.ChainID)
				files, err := countFiles(dir)
				if err != nil {
					return fmt.Errorf("layer %d: %w", i+1, err)
				}
				fmt.Fprintf(w, "%d\t%s\t%s\t%d\t%s\n", i+1, id, humanSize(l.Size), files, dir)
			}
			return w.Flush()
		},
	}
	c.Flags().BoolVar(&noTrunc, "no-trunc", false, "show full diff IDs")
	return c
}

// countFiles counts the entries below dir (not dir itself).
func countFiles(dir string) (int, error) {
	n := -1
	err := filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		n++
		return nil
	})
	return n, err
}
