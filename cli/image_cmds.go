package cli

import (
	"fmt"
	"io"
	"os"
	"path"
	"strconv"
	"strings"

	"github.com/lamina-project/lamina/layerstore"
	"github.com/lamina-project/lamina/runtime"
	"github.com/opencontainers/go-digest"
	"github.com/spf13/cobra"
)

// imageCommands returns the image commands: the top-level docker forms
// (images, import, tag, rmi, history), the `image` group with docker's
// aliases, and `system df|fsck`.
func imageCommands(app *App) []*cobra.Command {
	image := &cobra.Command{Use: "image", Short: "Manage images"}
	image.AddCommand(
		withUse(newImagesCmd(app), "ls [OPTIONS] [REPOSITORY[:TAG]]", "list", "images"),
		withUse(newRmiCmd(app), "rm [OPTIONS] IMAGE [IMAGE...]", "remove", "rmi"),
		newTagCmd(app),
		newHistoryCmd(app),
		newImportCmd(app),
		newImageInspectCmd(app),
		newImagePruneCmd(app),
		newLayersCmd(app),
	)
	return []*cobra.Command{
		newImagesCmd(app), newImportCmd(app), newTagCmd(app), newRmiCmd(app), newHistoryCmd(app),
		image, newSystemCmd(app),
	}
}

func withUse(c *cobra.Command, use string, aliases ...string) *cobra.Command {
	c.Use = use
	c.Aliases = aliases
	return c
}

// openStore opens the store at app.Root. LAMINA_MAX_LAYER_SIZE (bytes)
// overrides the decompression-bomb limit.
func openStore(app *App) (*layerstore.Store, error) {
	s, err := layerstore.Open(app.Root)
	if err != nil {
		return nil, err
	}
	// rmi refuses an image a running container uses even with -f, and
	// df counts such images as active: the runtime knows which run.
	s.IsRunning = func(id string) bool { return containerIsRunning(app, id) }
	s.HolderGone = func(holder string) bool { return holderGone(app, holder) }
	if v := os.Getenv("LAMINA_MAX_LAYER_SIZE"); v != "" {
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil || n <= 0 {
			return nil, fmt.Errorf("LAMINA_MAX_LAYER_SIZE=%q: want a positive number of bytes", v)
		}
		s.MaxLayerSize = n
	}
	return s, nil
}

// shortOrFull is an image ID as docker shows it: 12 hex, or the full
// "sha256:..." with --no-trunc.
func shortOrFull(id digest.Digest, noTrunc bool) string {
	if noTrunc {
		return id.String()
	}
	return layerstore.ShortID(id)
}

func newImportCmd(app *App) *cobra.Command {
	var changes []string
	var message string
	c := &cobra.Command{
		Use:   "import [OPTIONS] file|- [REPOSITORY[:TAG]]",
		Short: "Import the contents from a tarball to create a filesystem image",
		Long: `Import the contents from a tarball (plain, gzip, zstd or bzip2) to create a
one-layer filesystem image. Entries that would escape the layer, duplicates,
and truncated or corrupt streams are refused before anything is stored. A
layer larger than LAMINA_MAX_LAYER_SIZE bytes uncompressed (default 64 GiB)
is refused as a decompression bomb.`,
		Args: cobra.RangeArgs(1, 2),
		RunE: func(cmd *cobra.Command, args []string) error {
			s, err := openStore(app)
			if err != nil {
				return err
			}
			defer s.Close()
			opts := layerstore.ImportOptions{Changes: changes, Message: message, Source: args[0]}
			if len(args) == 2 {
				opts.Tags = []string{args[1]}
				if _, err := layerstore.ParseReference(args[1]); err != nil {
					return err
				}
			}
			var r io.Reader = app.Stdin
			if args[0] != "-" {
				f, err := os.Open(args[0])
				if err != nil {
					return fmt.Errorf("import: %w", err)
				}
				defer f.Close()
				r = f
			}
			r, stop := withProgress(app.Stderr, "Importing", r)
			img, err := s.ImportTar(r, opts)
			stop()
			if err != nil {
				return err
			}
			fmt.Fprintln(app.Stdout, img.ID)
			return nil
		},
	}
	stringArrayVarP(c.Flags(), &changes, "change", "c", "Apply Dockerfile instruction to the created image")
	c.Flags().StringVarP(&message, "message", "m", "", "Set commit message for imported image")
	return c
}

func newImagesCmd(app *App) *cobra.Command {
	var all, quiet, digests, noTrunc bool
	var format string
	var filters []string
	c := &cobra.Command{
		Use:   "images [OPTIONS] [REPOSITORY[:TAG]]",
		Short: "List images",
		Args:  cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			s, err := openStore(app)
			if err != nil {
				return err
			}
			defer s.Close()
			imgs, err := s.Images()
			if err != nil {
				return err
			}
			match := func(repo, tag string) bool { return true }
			if len(args) == 1 {
				pat, ptag, hasTag := strings.Cut(args[0], ":")
				if strings.Contains(ptag, "/") {
					pat, hasTag = args[0], false
				}
				match = func(repo, tag string) bool {
					ok, _ := path.Match(pat, repo)
					return ok && (!hasTag || tag == ptag)
				}
			}
			dangling := ""
			for _, f := range filters {
				k, v, _ := strings.Cut(f, "=")
				switch k {
				case "dangling":
					dangling = v
				case "reference":
					pat := v
					prev := match
					match = func(repo, tag string) bool {
						ok, _ := path.Match(pat, repo+":"+tag)
						ok2, _ := path.Match(pat, repo)
						return prev(repo, tag) && (ok || ok2)
					}
				default:
					return fmt.Errorf("invalid filter '%s'", k)
				}
			}
			parents := map[digest.Digest]bool{}
			for _, img := range imgs {
				parents[img.Parent] = true
			}
			if format == "" {
				format = "table {{.Repository}}\t{{.Tag}}\t{{.ID}}\t{{.CreatedSince}}\t{{.Size}}"
				if digests {
					format = "table {{.Repository}}\t{{.Tag}}\t{{.Digest}}\t{{.ID}}\t{{.CreatedSince}}\t{{.Size}}"
				}
			}
			if quiet {
				format = "{{.ID}}"
			}
			f, err := newFormatter(app.Stdout, format, map[string]string{
				"Repository": "REPOSITORY", "Tag": "TAG", "Digest": "DIGEST", "ID": "IMAGE ID",
				"CreatedSince": "CREATED", "CreatedAt": "CREATED AT", "Size": "SIZE", "VirtualSize": "SIZE",
				"SharedSize": "SHARED SIZE", "UniqueSize": "UNIQUE SIZE", "Containers": "CONTAINERS",
			})
			if err != nil {
				return err
			}
			seen := map[digest.Digest]bool{}
			for _, img := range imgs {
				pairs := [][2]string{}
				for _, t := range img.RepoTags {
					i := strings.LastIndex(t, ":")
					pairs = append(pairs, [2]string{t[:i], t[i+1:]})
				}
				if len(pairs) == 0 {
					if len(args) == 1 || dangling == "false" || (!all && parents[img.ID]) {
						continue
					}
					pairs = append(pairs, [2]string{"<none>", "<none>"})
				} else if dangling == "true" {
					continue
				}
				for _, p := range pairs {
					if p[0] != "<none>" && !match(p[0], p[1]) {
						continue
					}
					if quiet && seen[img.ID] {
						continue
					}
					seen[img.ID] = true
					if err := f.row(row{
						"ID": shortOrFull(img.ID, noTrunc), "Repository": p[0], "Tag": p[1], "Digest": "<none>",
						"CreatedSince": since(img.Created), "CreatedAt": createdAt(img.Created),
						"Size": humanSize(img.Size), "VirtualSize": humanSize(img.Size),
						"SharedSize": "N/A", "UniqueSize": "N/A", "Containers": "N/A",
					}); err != nil {
						return err
					}
				}
			}
			return f.flush()
		},
	}
	fl := c.Flags()
	fl.BoolVarP(&all, "all", "a", false, "Show all images (default hides intermediate images)")
	fl.BoolVarP(&quiet, "quiet", "q", false, "Only show image IDs")
	fl.BoolVar(&digests, "digests", false, "Show digests")
	fl.BoolVar(&noTrunc, "no-trunc", false, "Don't truncate output")
	fl.StringVar(&format, "format", "", "Format output using a custom template ('table', 'table TEMPLATE', 'json', or a Go template)")
	stringArrayVarP(fl, &filters, "filter", "f", "Filter output based on conditions provided (dangling=true|false, reference=PATTERN)")
	return c
}

func newTagCmd(app *App) *cobra.Command {
	return &cobra.Command{
		Use:   "tag SOURCE_IMAGE[:TAG] TARGET_IMAGE[:TAG]",
		Short: "Create a tag TARGET_IMAGE that refers to SOURCE_IMAGE",
		Args:  cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			s, err := openStore(app)
			if err != nil {
				return err
			}
			defer s.Close()
			return s.Tag(args[0], args[1])
		},
	}
}

func newRmiCmd(app *App) *cobra.Command {
	var force, noPrune bool
	c := &cobra.Command{
		Use:   "rmi [OPTIONS] IMAGE [IMAGE...]",
		Short: "Remove one or more images",
		Args:  cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			s, err := openStore(app)
			if err != nil {
				return err
			}
			defer s.Close()
			failed := false
			for _, ref := range args {
				out, err := s.RemoveImage(ref, force, !noPrune)
				if err != nil {
					// docker goes on with the other images, reports each
					// failure and exits 1.
					fmt.Fprintf(app.Stderr, "lamina: %v\n", err)
					failed = true
					continue
				}
				for _, r := range out {
					fmt.Fprintln(app.Stdout, r.String())
				}
			}
			sweepInitLayers(app, s)
			if failed {
				return &StatusError{Code: 1}
			}
			return nil
		},
	}
	c.Flags().BoolVarP(&force, "force", "f", false, "Force removal of the image")
	c.Flags().BoolVar(&noPrune, "no-prune", false, "Do not delete untagged parents")
	return c
}

func newHistoryCmd(app *App) *cobra.Command {
	var noTrunc, quiet, human bool
	var format string
	c := &cobra.Command{
		Use:   "history [OPTIONS] IMAGE",
		Short: "Show the history of an image",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			s, err := openStore(app)
			if err != nil {
				return err
			}
			defer s.Close()
			rows, err := s.History(args[0])
			if err != nil {
				return err
			}
			if format == "" {
				format = "table {{.ID}}\t{{.CreatedSince}}\t{{.CreatedBy}}\t{{.Size}}\t{{.Comment}}"
			}
			if quiet {
				format = "{{.ID}}"
			}
			f, err := newFormatter(app.Stdout, format, map[string]string{
				"ID": "IMAGE", "CreatedSince": "CREATED", "CreatedAt": "CREATED AT",
				"CreatedBy": "CREATED BY", "Size": "SIZE", "Comment": "COMMENT",
			})
			if err != nil {
				return err
			}
			for _, h := range rows {
				id := h.ID
				if id != layerstore.MissingID {
					id = shortOrFull(digest.Digest(id), noTrunc)
				}
				by := strings.ReplaceAll(h.CreatedBy, "\t", " ")
				if !noTrunc {
					by = ellipsis(by, 45)
				}
				created, size := since(h.Created), humanSize(h.Size)
				if !human {
					created, size = h.Created.Format("2006-01-02T15:04:05Z07:00"), strconv.FormatInt(h.Size, 10)
				}
				if err := f.row(row{
					"ID": id, "CreatedSince": created, "CreatedAt": h.Created.Format("2006-01-02T15:04:05Z07:00"),
					"CreatedBy": by, "Size": size, "Comment": h.Comment,
				}); err != nil {
					return err
				}
			}
			return f.flush()
		},
	}
	fl := c.Flags()
	fl.BoolVar(&noTrunc, "no-trunc", false, "Don't truncate output")
	fl.BoolVarP(&quiet, "quiet", "q", false, "Only show image IDs")
	fl.BoolVarP(&human, "human", "H", true, "Print sizes and dates in human readable format")
	fl.StringVar(&format, "format", "", "Format output using a custom template")
	return c
}

// sweepInitLayers removes the init layers (runtime.Store.InitLayer) of
// images that are gone. A failure is reported but fails no command: the
// next removal sweeps again.
func sweepInitLayers(app *App, ls *layerstore.Store) {
	imgs, err := ls.Images()
	if err != nil {
		return
	}
	ids := make(map[string]bool, len(imgs))
	for _, img := range imgs {
		ids[img.ID.String()] = true
	}
	s, err := runtime.OpenStore(app.Root)
	if err == nil {
		err = s.SweepInitLayers(func(id string) bool { return ids[id] })
	}
	if err != nil {
		fmt.Fprintf(app.Stderr, "lamina: %v\n", err)
	}
}
