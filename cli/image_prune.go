package cli

import (
	"fmt"
	"strings"

	"github.com/spf13/cobra"
)

func newImagePruneCmd(app *App) *cobra.Command {
	var all, force bool
	c := &cobra.Command{
		Use:   "prune [OPTIONS]",
		Short: "Remove unused images",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if !force {
				warn := "WARNING! This will remove all dangling images.\n"
				if all {
					warn = "WARNING! This will remove all images without at least one container associated to them.\n"
				}
				fmt.Fprint(app.Stdout, warn+"Are you sure you want to continue? [y/N] ")
				var answer string
				fmt.Fscanln(app.Stdin, &answer)
				if a := strings.ToLower(strings.TrimSpace(answer)); a != "y" && a != "yes" {
					return nil
				}
			}
			s, err := openStore(app)
			if err != nil {
				return err
			}
			defer s.Close()
			rep, err := s.PruneImages(all)
			if err != nil {
				return err
			}
			sweepInitLayers(app, s)
			if len(rep.Deleted) > 0 {
				fmt.Fprintln(app.Stdout, "Deleted Images:")
				for _, d := range rep.Deleted {
					if d.Untagged != "" {
						fmt.Fprintln(app.Stdout, "untagged: "+d.Untagged)
					} else {
						fmt.Fprintln(app.Stdout, "deleted: "+d.Deleted)
					}
				}
				fmt.Fprintln(app.Stdout)
			}
			fmt.Fprintf(app.Stdout, "Total reclaimed space: %s\n", humanSize(rep.SpaceReclaimed))
			return nil
		},
	}
	c.Flags().BoolVarP(&all, "all", "a", false, "Remove all unused images, not just dangling ones")
	c.Flags().BoolVarP(&force, "force", "f", false, "Do not prompt for confirmation")
	return c
}
