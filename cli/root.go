// Package cli holds lamina's docker-compatible commands: flags, output
// tables and --format templates. It has no business logic of its own: each
// command parses its arguments and calls layerstore, runtime, fs or bench.
//
// User-facing errors are made here, once: a command returns an error and
// Main prints it as "lamina: <what>: <why>" and exits with the code docker
// would use (125 for lamina's own errors unless a StatusError says otherwise).
package cli

import (
	"errors"
	"fmt"
	"io"
	"os"

	"github.com/spf13/cobra"
)

// App carries what every command needs: where the store is and where output
// goes. One App is made per process in Main; nothing here is global.
type App struct {
	Root   string // store root (--root, LAMINA_ROOT, default /var/lib/lamina)
	Stdin  io.Reader
	Stdout io.Writer
	Stderr io.Writer
	// host is set when this process is the detached half of a run
	// (MainDetached).
	host *host
}

// DefaultRoot is the store root when neither --root nor LAMINA_ROOT is set.
const DefaultRoot = "/var/lib/lamina"

// StatusError is an error that ends the process with a given exit code, as
// docker does: 125 for lamina's errors, 126 cannot execute, 127 not found,
// or the container's own exit status. An empty Err prints nothing.
type StatusError struct {
	Code int
	Err  error
}

func (e *StatusError) Error() string {
	if e.Err == nil {
		return fmt.Sprintf("exit status %d", e.Code)
	}
	return e.Err.Error()
}

func (e *StatusError) Unwrap() error { return e.Err }

// Version is lamina's version, as `lamina --version` prints it.
const Version = "0.1"

// flagError is docker's answer to a bad flag: the error, and the help
// command of the command it was given to ("lamina container ls", not
// "lamina ls"; for the top level, no command name before the error).
func flagError(c *cobra.Command, err error) error {
	if c.HasParent() {
		err = fmt.Errorf("%s: %w", c.Name(), err)
	}
	return &StatusError{Code: 125, Err: fmt.Errorf("%w\nSee '%s --help'", err, c.CommandPath())}
}

// NewRoot builds the lamina command tree for app.
func NewRoot(app *App) *cobra.Command {
	root := newRootCmd(app)
	for _, add := range []func(*App) []*cobra.Command{
		imageCommands,
		containerCommands,
		mountCommands,
		benchCommands,
	} {
		root.AddCommand(add(app)...)
	}
	return root
}

// newRunRoot is NewRoot with only `run` and `container run`, for the
// detached half of a run (MainDetached), which runs nothing else: the
// whole tree costs a fresh process about a millisecond to build.
func newRunRoot(app *App) *cobra.Command {
	root := newRootCmd(app)
	group := newContainerGroup()
	group.AddCommand(newRunCmd(app))
	root.AddCommand(newRunCmd(app), group)
	return root
}

// newRootCmd is the top of the command tree, without its commands.
func newRootCmd(app *App) *cobra.Command {
	root := &cobra.Command{
		Use:           "lamina",
		Short:         "Docker's image and container model, daemonless, on a userspace union filesystem",
		SilenceUsage:  true,
		SilenceErrors: true,
		PersistentPreRunE: func(cmd *cobra.Command, args []string) error {
			if app.Root == "" {
				app.Root = DefaultRoot
			}
			return nil
		},
	}
	root.SetIn(app.Stdin)
	root.SetOut(app.Stdout)
	root.SetErr(app.Stderr)
	def := os.Getenv("LAMINA_ROOT")
	if def == "" {
		def = DefaultRoot
	}
	root.PersistentFlags().StringVar(&app.Root, "root", def, "root directory of the lamina store (env LAMINA_ROOT)")
	root.SetFlagErrorFunc(flagError)
	// docker --version's answer; laminafs -V gives the same number.
	root.Version = Version
	root.SetVersionTemplate("lamina version {{.Version}}\n")
	return root
}

// Main runs lamina with args (without the program name) and returns the
// process exit code. It never panics on a user's mistake: errors print as
// "lamina: ..." on stderr.
func Main(args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	if code, ok := runHidden(args, stderr); ok {
		return code
	}
	return run(&App{Stdin: stdin, Stdout: stdout, Stderr: stderr}, NewRoot, args)
}

// run runs the command args with app, in the tree newTree builds, and
// returns the exit code.
func run(app *App, newTree func(*App) *cobra.Command, args []string) int {
	stderr := app.Stderr
	root := newTree(app)
	root.SetArgs(args)
	err := root.Execute()
	if err == nil {
		return 0
	}
	code := 125
	var se *StatusError
	if errors.As(err, &se) {
		code = se.Code
		if se.Err == nil {
			return code
		}
	}
	fmt.Fprintf(stderr, "lamina: %v\n", err)
	return code
}
