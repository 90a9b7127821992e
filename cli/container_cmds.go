package cli

import "github.com/spf13/cobra"

// containerCommands returns the container commands.
func containerCommands(app *App) []*cobra.Command {
	return nil
}
