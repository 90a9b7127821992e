package cli

import "github.com/spf13/cobra"

// benchCommands returns the bench commands.
func benchCommands(app *App) []*cobra.Command {
	return nil
}
