package cli

import (
	"fmt"
	"sort"

	"github.com/docker/go-units"
	"github.com/lamina-project/lamina/layerstore"
	"github.com/spf13/cobra"
)

func newSystemCmd(app *App) *cobra.Command {
	c := &cobra.Command{Use: "system", Short: "Manage lamina"}
	c.AddCommand(newDfCmd(app), newFsckCmd(app))
	return c
}

func newDfCmd(app *App) *cobra.Command {
	var verbose bool
	var format string
	c := &cobra.Command{
		Use:   "df [OPTIONS]",
		Short: "Show lamina disk usage",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			s, err := openStore(app)
			if err != nil {
				return err
			}
			defer s.Close()
			du, err := s.DiskUsage()
			if err != nil {
				return err
			}
			if verbose {
				return printDfVerbose(app, du)
			}
			if format == "" {
				format = "table {{.Type}}\t{{.TotalCount}}\t{{.Active}}\t{{.Size}}\t{{.Reclaimable}}"
			}
			f, err := newFormatter(app.Stdout, format, map[string]string{
				"Type": "TYPE", "TotalCount": "TOTAL", "Active": "ACTIVE", "Size": "SIZE", "Reclaimable": "RECLAIMABLE",
			})
			if err != nil {
				return err
			}
			var ctrSize, ctrReclaim int64
			ctrActive := 0
			for _, c := range du.Containers {
				ctrSize += c.Size
				if s.IsRunning != nil && s.IsRunning(c.ID) {
					ctrActive++
				} else {
					ctrReclaim += c.Size
				}
			}
			rows := []row{
				{"Type": "Images", "TotalCount": fmt.Sprint(len(du.Images)), "Active": fmt.Sprint(du.Active),
					"Size": units.HumanSize(float64(du.LayersSize)), "Reclaimable": percent(du.Reclaimable, du.LayersSize)},
				{"Type": "Containers", "TotalCount": fmt.Sprint(len(du.Containers)), "Active": fmt.Sprint(ctrActive),
					"Size": units.HumanSize(float64(ctrSize)), "Reclaimable": percent(ctrReclaim, ctrSize)},
				{"Type": "Local Volumes", "TotalCount": "0", "Active": "0", "Size": "0B", "Reclaimable": "0B"},
				{"Type": "Build Cache", "TotalCount": "0", "Active": "0", "Size": "0B", "Reclaimable": "0B"},
			}
			for _, r := range rows {
				if err := f.row(r); err != nil {
					return err
				}
			}
			return f.flush()
		},
	}
	c.Flags().BoolVarP(&verbose, "verbose", "v", false, "Show detailed information on space usage")
	c.Flags().StringVar(&format, "format", "", "Format output using a custom template")
	return c
}

// percent is docker's RECLAIMABLE cell: "1.2MB (40%)".
func percent(part, total int64) string {
	if total <= 0 {
		return units.HumanSize(float64(part))
	}
	return fmt.Sprintf("%s (%d%%)", units.HumanSize(float64(part)), part*100/total)
}

func printDfVerbose(app *App, du *layerstore.DiskUsage) error {
	out := app.Stdout
	fmt.Fprint(out, "Images space usage:\n\n")
	f, err := newFormatter(out, "table {{.Repository}}\t{{.Tag}}\t{{.ID}}\t{{.CreatedSince}}\t{{.Size}}\t{{.SharedSize}}\t{{.UniqueSize}}\t{{.Containers}}",
		map[string]string{"Repository": "REPOSITORY", "Tag": "TAG", "ID": "IMAGE ID", "CreatedSince": "CREATED",
			"Size": "SIZE", "SharedSize": "SHARED SIZE", "UniqueSize": "UNIQUE SIZE", "Containers": "CONTAINERS"})
	if err != nil {
		return err
	}
	for _, u := range du.Images {
		tags := u.Image.RepoTags
		if len(tags) == 0 {
			tags = []string{"<none>:<none>"}
		}
		for _, t := range tags {
			repo, tag := t, ""
			for i := len(t) - 1; i >= 0; i-- {
				if t[i] == ':' {
					repo, tag = t[:i], t[i+1:]
					break
				}
			}
			f.row(row{"Repository": repo, "Tag": tag, "ID": layerstore.ShortID(u.Image.ID), "CreatedSince": since(u.Image.Created),
				"Size": humanSize(u.Image.Size), "SharedSize": units.HumanSize(float64(u.SharedSize)),
				"UniqueSize": units.HumanSize(float64(u.UniqueSize)), "Containers": fmt.Sprint(u.Containers)})
		}
	}
	f.flush()
	fmt.Fprint(out, "\nContainers space usage:\n\n")
	f, _ = newFormatter(out, "table {{.ID}}\t{{.Image}}\t{{.Command}}\t{{.LocalVolumes}}\t{{.Size}}\t{{.CreatedSince}}\t{{.Status}}\t{{.Names}}",
		map[string]string{"ID": "CONTAINER ID", "Image": "IMAGE", "Command": "COMMAND", "LocalVolumes": "LOCAL VOLUMES",
			"Size": "SIZE", "CreatedSince": "CREATED", "Status": "STATUS", "Names": "NAMES"})
	sort.Slice(du.Containers, func(i, j int) bool { return du.Containers[i].ID < du.Containers[j].ID })
	for _, c := range du.Containers {
		f.row(row{"ID": layerstore.ShortContainerID(c.ID), "Image": layerstore.ShortID(c.Image), "LocalVolumes": "0",
			"Size": units.HumanSize(float64(c.Size))})
	}
	f.flush()
	fmt.Fprint(out, "\nLocal Volumes space usage:\n\n")
	f, _ = newFormatter(out, "table {{.Name}}\t{{.Links}}\t{{.Size}}", map[string]string{"Name": "VOLUME NAME", "Links": "LINKS", "Size": "SIZE"})
	f.flush()
	fmt.Fprint(out, "\nBuild cache usage: 0B\n\n")
	f, _ = newFormatter(out, "table {{.ID}}\t{{.Type}}\t{{.Size}}\t{{.Created}}\t{{.LastUsed}}\t{{.Usage}}\t{{.Shared}}",
		map[string]string{"ID": "CACHE ID", "Type": "CACHE TYPE", "Size": "SIZE", "Created": "CREATED", "LastUsed": "LAST USED", "Usage": "USAGE", "Shared": "SHARED"})
	return f.flush()
}

func newFsckCmd(app *App) *cobra.Command {
	var repair bool
	c := &cobra.Command{
		Use:   "fsck [OPTIONS]",
		Short: "Check the store's consistency; with --repair remove what is broken or orphaned",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			s, err := openStore(app)
			if err != nil {
				return err
			}
			defer s.Close()
			rep, err := s.Fsck(repair)
			if err != nil {
				return err
			}
			out := app.Stdout
			for _, r := range rep.Repaired {
				fmt.Fprintln(out, "repaired: "+r)
			}
			for _, p := range rep.Problems {
				fmt.Fprintln(out, "problem: "+p)
			}
			for _, o := range rep.Orphans {
				fmt.Fprintf(out, "orphan: %s (%s)\n", o.Path, o.Kind)
			}
			fmt.Fprintf(out, "checked %d images, %d layers, %d blobs, %d containers: ", rep.Images, rep.Layers, rep.Blobs, rep.Containers)
			switch {
			case !rep.Clean():
				fmt.Fprintf(out, "%d problems\n", len(rep.Problems))
				return &StatusError{Code: 1, Err: fmt.Errorf("store at %s is inconsistent: %d problems (lamina system fsck --repair removes what is broken)", s.Root(), len(rep.Problems))}
			case len(rep.Orphans) > 0:
				fmt.Fprintf(out, "clean, %d orphans (lamina system fsck --repair removes them)\n", len(rep.Orphans))
			default:
				fmt.Fprintln(out, "clean")
			}
			return nil
		},
	}
	c.Flags().BoolVar(&repair, "repair", false, "Remove broken images, dangling tags and orphans")
	return c
}
