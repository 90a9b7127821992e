package cli

import "github.com/spf13/cobra"

// mountCommands returns the mount commands.
func mountCommands(app *App) []*cobra.Command {
	return nil
}
