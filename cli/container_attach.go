package cli

import (
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"

	"github.com/creack/pty"
	"github.com/lamina-project/lamina/runtime"
	"github.com/spf13/cobra"
	"golang.org/x/term"
)

// terminalFd returns the fd of r when it is a terminal, else -1.
func terminalFd(r any) int {
	if f, ok := r.(*os.File); ok && term.IsTerminal(int(f.Fd())) {
		return int(f.Fd())
	}
	return -1
}

// attachStreams attaches the CLI's stdio to c until it exits: raw mode and
// window sizes for a tty, signals forwarded otherwise (docker's sig-proxy).
// connect makes the attachment (an attach to a running container, or a
// start with the client attached).
func attachStreams(app *App, c *runtime.Container, withStdin bool, connect func(runtime.AttachOptions) (*runtime.Attachment, error)) (runtime.ExitStatus, error) {
	o := runtime.AttachOptions{Stdout: app.Stdout, Stderr: app.Stderr}
	if withStdin {
		o.Stdin = app.Stdin
	}
	if c.Config.Tty {
		o.Stderr = nil // a terminal has one output stream
		if fd := terminalFd(app.Stdin); fd >= 0 && withStdin {
			old, err := term.MakeRaw(fd)
			if err == nil {
				defer term.Restore(fd, old)
			}
		}
		if fd := terminalFd(app.Stdout); fd >= 0 {
			resize := make(chan [2]uint16, 1)
			sendSize := func() {
				if w, h, err := term.GetSize(fd); err == nil {
					select {
					case resize <- [2]uint16{uint16(h), uint16(w)}:
					default:
					}
				}
			}
			sendSize()
			winch := make(chan os.Signal, 1)
			app.notify(winch, syscall.SIGWINCH)
			defer app.stopNotify(winch)
			go func() {
				for range winch {
					sendSize()
				}
			}()
			o.Resize = resize
		}
	} else {
		sigs := make(chan os.Signal, 8)
		app.notify(sigs, syscall.SIGINT, syscall.SIGTERM, syscall.SIGHUP, syscall.SIGQUIT, syscall.SIGUSR1, syscall.SIGUSR2)
		defer app.stopNotify(sigs)
		fwd := make(chan int, 8)
		go func() {
			for sig := range sigs {
				fwd <- int(sig.(syscall.Signal))
			}
		}()
		o.Signals = fwd
	}
	a, err := connect(o)
	if err != nil {
		return runtime.ExitStatus{}, err
	}
	return a.Wait()
}

func newAttachCmd(app *App) *cobra.Command {
	var noStdin bool
	c := &cobra.Command{
		Use:   "attach [OPTIONS] CONTAINER",
		Short: "Attach local standard input, output, and error streams to a running container",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			s, err := runtime.OpenStore(app.Root)
			if err != nil {
				return err
			}
			c, err := getContainer(s, args[0])
			if err != nil {
				return err
			}
			st, err := s.State(c)
			if err != nil {
				return err
			}
			if !st.Running {
				return &StatusError{Code: 1, Err: errors.New("You cannot attach to a stopped container, start it first")}
			}
			if st.Paused {
				return &StatusError{Code: 1, Err: errors.New("You cannot attach to a paused container, unpause it first")}
			}
			withStdin := c.Config.OpenStdin && !noStdin
			if c.Config.Tty && withStdin && terminalFd(app.Stdin) < 0 {
				return &StatusError{Code: 1, Err: errors.New("the input device is not a TTY")}
			}
			exit, err := attachStreams(app, c, withStdin, func(o runtime.AttachOptions) (*runtime.Attachment, error) {
				return s.Attach(c, o)
			})
			if err != nil {
				return err
			}
			if exit.ExitCode != 0 {
				return &StatusError{Code: exit.ExitCode}
			}
			return nil
		},
	}
	c.Flags().BoolVar(&noStdin, "no-stdin", false, "Do not attach STDIN")
	return c
}

func newExecCmd(app *App) *cobra.Command {
	var interactive, tty, detach, privileged bool
	var user, workdir string
	var env []string
	c := &cobra.Command{
		Use:   "exec [OPTIONS] CONTAINER COMMAND [ARG...]",
		Short: "Execute a command in a running container",
		Args:  cobra.MinimumNArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			s, err := runtime.OpenStore(app.Root)
			if err != nil {
				return err
			}
			if tty && interactive && !detach && terminalFd(app.Stdin) < 0 {
				return &StatusError{Code: 1, Err: errors.New("the input device is not a TTY")}
			}
			c, err := getContainer(s, args[0])
			if err != nil {
				return err
			}
			o := runtime.ExecOptions{Args: args[1:], Env: expandEnv(env), User: user, Cwd: workdir, Tty: tty, Privileged: privileged, Detach: detach}
			var stdin io.Reader
			if interactive {
				stdin = app.Stdin
			}
			stdout, stderr := app.Stdout, app.Stderr
			if detach {
				stdin, stdout, stderr = nil, nil, nil
			}
			var code int
			if tty && !detach {
				code, err = execTTY(app, s, c, o, stdin)
			} else {
				code, err = s.Exec(c, o, stdin, stdout, stderr)
			}
			var ee *runtime.ExecError
			if errors.As(err, &ee) {
				return &StatusError{Code: ee.Code, Err: fmt.Errorf("exec failed: %w", err)}
			}
			if errors.Is(err, runtime.ErrNotRunning) {
				return &StatusError{Code: 1, Err: err}
			}
			if err != nil {
				return err
			}
			if code != 0 {
				return &StatusError{Code: code}
			}
			return nil
		},
	}
	fl := c.Flags()
	fl.SetInterspersed(false)
	fl.BoolVarP(&interactive, "interactive", "i", false, "Keep STDIN open even if not attached")
	fl.BoolVarP(&tty, "tty", "t", false, "Allocate a pseudo-TTY")
	fl.BoolVarP(&detach, "detach", "d", false, "Detached mode: run command in the background")
	fl.BoolVar(&privileged, "privileged", false, "Give extended privileges to the command")
	fl.StringVarP(&user, "user", "u", "", "Username or UID (format: <name|uid>[:<group|gid>])")
	fl.StringVarP(&workdir, "workdir", "w", "", "Working directory inside the container")
	stringArrayVarP(fl, &env, "env", "e", "Set environment variables")
	return c
}

// execTTY runs an exec on a terminal: the pty is made inside the
// container and its master comes back here, to be copied to and from the
// CLI's stdio, in raw mode when the CLI is on a terminal.
func execTTY(app *App, s *runtime.Store, c *runtime.Container, o runtime.ExecOptions, stdin io.Reader) (int, error) {
	done := make(chan struct{})
	var master *os.File
	var restore func()
	o.OnPty = func(m *os.File) {
		master = m
		if fd := terminalFd(app.Stdout); fd >= 0 {
			setSize := func() {
				if w, h, err := term.GetSize(fd); err == nil {
					_ = pty.Setsize(m, &pty.Winsize{Rows: uint16(h), Cols: uint16(w)})
				}
			}
			setSize()
			winch := make(chan os.Signal, 1)
			signal.Notify(winch, syscall.SIGWINCH)
			go func() {
				for range winch {
					setSize()
				}
			}()
		}
		if stdin != nil {
			if fd := terminalFd(stdin); fd >= 0 {
				if old, err := term.MakeRaw(fd); err == nil {
					restore = func() { _ = term.Restore(fd, old) }
				}
			}
			go func() { _, _ = io.Copy(m, stdin) }()
		}
		go func() {
			defer close(done)
			_, _ = io.Copy(app.Stdout, m)
		}()
	}
	code, err := s.Exec(c, o, nil, nil, nil)
	if master != nil {
		<-done
		master.Close()
	}
	if restore != nil {
		restore()
	}
	return code, err
}
