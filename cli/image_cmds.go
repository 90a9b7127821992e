package cli

import "github.com/spf13/cobra"

// imageCommands returns the image commands.
func imageCommands(app *App) []*cobra.Command {
	return nil
}
