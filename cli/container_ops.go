package cli

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"time"

	"github.com/lamina-project/lamina/runtime"
	"github.com/opencontainers/go-digest"
	"github.com/spf13/cobra"
	"golang.org/x/sys/unix"
)

func digestOf(id string) digest.Digest { return digest.Digest(id) }

func newStopCmd(app *App) *cobra.Command {
	var timeout int
	var signal string
	c := &cobra.Command{
		Use:   "stop [OPTIONS] CONTAINER [CONTAINER...]",
		Short: "Stop one or more running containers",
		Args:  cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			s, err := runtime.OpenStore(app.Root)
			if err != nil {
				return err
			}
			sig := 0
			if signal != "" {
				if sig, err = parseSignal(signal); err != nil {
					return err
				}
			}
			return forEach(app, s, args, func(c *runtime.Container) error {
				return s.Stop(c, unix.Signal(sig), time.Duration(timeout)*time.Second)
			})
		},
	}
	c.Flags().IntVarP(&timeout, "time", "t", 10, "Seconds to wait before killing the container")
	c.Flags().IntVar(&timeout, "timeout", 10, "Seconds to wait before killing the container")
	_ = c.Flags().MarkHidden("timeout")
	c.Flags().StringVarP(&signal, "signal", "s", "", "Signal to send to the container")
	return c
}

func newRestartCmd(app *App) *cobra.Command {
	var timeout int
	c := &cobra.Command{
		Use:   "restart [OPTIONS] CONTAINER [CONTAINER...]",
		Short: "Restart one or more containers",
		Args:  cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			s, err := runtime.OpenStore(app.Root)
			if err != nil {
				return err
			}
			return forEach(app, s, args, func(c *runtime.Container) error {
				if err := s.Stop(c, 0, time.Duration(timeout)*time.Second); err != nil {
					return err
				}
				return s.Start(c)
			})
		},
	}
	c.Flags().IntVarP(&timeout, "time", "t", 10, "Seconds to wait before killing the container")
	return c
}

func newKillCmd(app *App) *cobra.Command {
	var signal string
	c := &cobra.Command{
		Use:   "kill [OPTIONS] CONTAINER [CONTAINER...]",
		Short: "Kill one or more running containers",
		Args:  cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			s, err := runtime.OpenStore(app.Root)
			if err != nil {
				return err
			}
			sig, err := parseSignal(signal)
			if err != nil {
				return err
			}
			return forEach(app, s, args, func(c *runtime.Container) error {
				if err := s.Kill(c, unix.Signal(sig)); err != nil {
					return fmt.Errorf("cannot kill container: %s: %w", c.ID[:12], err)
				}
				return nil
			})
		},
	}
	c.Flags().StringVarP(&signal, "signal", "s", "KILL", "Signal to send to the container")
	return c
}

func newPauseCmd(app *App, pause bool) *cobra.Command {
	use, short := "pause CONTAINER [CONTAINER...]", "Pause all processes within one or more containers"
	if !pause {
		use, short = "unpause CONTAINER [CONTAINER...]", "Unpause all processes within one or more containers"
	}
	return &cobra.Command{
		Use:   use,
		Short: short,
		Args:  cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			s, err := runtime.OpenStore(app.Root)
			if err != nil {
				return err
			}
			return forEach(app, s, args, func(c *runtime.Container) error {
				if pause {
					return s.Pause(c)
				}
				return s.Unpause(c)
			})
		},
	}
}

func newRmCmd(app *App) *cobra.Command {
	var force, volumes bool
	c := &cobra.Command{
		Use:     "rm [OPTIONS] CONTAINER [CONTAINER...]",
		Aliases: []string{"remove"},
		Short:   "Remove one or more containers",
		Args:    cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			s, err := runtime.OpenStore(app.Root)
			if err != nil {
				return err
			}
			return forEach(app, s, args, func(c *runtime.Container) error {
				st, err := s.State(c)
				if err != nil {
					return err
				}
				if st.Running {
					if !force {
						state := "running"
						if st.Paused {
							state = "paused"
						}
						return fmt.Errorf("cannot remove container \"/%s\": container is %s: stop the container before removing or force remove", c.Name, state)
					}
					if err := s.Kill(c, unix.SIGKILL); err != nil && !errors.Is(err, runtime.ErrNotRunning) {
						return err
					}
					if !s.WaitStopped(c, 30*time.Second) {
						return fmt.Errorf("cannot remove container \"/%s\": it did not stop", c.Name)
					}
				}
				return removeContainer(app, s, c)
			})
		},
	}
	c.Flags().BoolVarP(&force, "force", "f", false, "Force the removal of a running container (uses SIGKILL)")
	c.Flags().BoolVarP(&volumes, "volumes", "v", false, "Remove anonymous volumes associated with the container")
	return c
}

func newWaitCmd(app *App) *cobra.Command {
	return &cobra.Command{
		Use:   "wait CONTAINER [CONTAINER...]",
		Short: "Block until one or more containers stop, then print their exit codes",
		Args:  cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			s, err := runtime.OpenStore(app.Root)
			if err != nil {
				return err
			}
			var failed bool
			for _, ref := range args {
				c, err := getContainer(s, ref)
				if err != nil {
					fmt.Fprintf(app.Stderr, "lamina: %v\n", err.(*StatusError).Err)
					failed = true
					continue
				}
				s.WaitStopped(c, 100*365*24*time.Hour)
				st, err := s.State(c)
				if err != nil {
					// Removed (--rm) while we waited: docker reports 0.
					fmt.Fprintln(app.Stdout, 0)
					continue
				}
				fmt.Fprintln(app.Stdout, st.ExitCode)
			}
			if failed {
				return &StatusError{Code: 1}
			}
			return nil
		},
	}
}

func newRenameCmd(app *App) *cobra.Command {
	return &cobra.Command{
		Use:   "rename CONTAINER NEW_NAME",
		Short: "Rename a container",
		Args:  cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			s, err := runtime.OpenStore(app.Root)
			if err != nil {
				return err
			}
			c, err := getContainer(s, args[0])
			if err != nil {
				return err
			}
			if strings.TrimPrefix(args[1], "/") == c.Name {
				return &StatusError{Code: 1, Err: errors.New("Renaming a container with the same name as its current name")}
			}
			if err := s.Rename(c, args[1]); err != nil {
				return &StatusError{Code: 1, Err: err}
			}
			return nil
		},
	}
}

func newContainerPruneCmd(app *App) *cobra.Command {
	var force bool
	c := &cobra.Command{
		Use:   "prune [OPTIONS]",
		Short: "Remove all stopped containers",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if !force {
				fmt.Fprint(app.Stdout, "WARNING! This will remove all stopped containers.\nAre you sure you want to continue? [y/N] ")
				line, _ := bufio.NewReader(app.Stdin).ReadString('\n')
				if a := strings.ToLower(strings.TrimSpace(line)); a != "y" && a != "yes" {
					return nil
				}
			}
			s, err := runtime.OpenStore(app.Root)
			if err != nil {
				return err
			}
			all, err := s.List()
			if err != nil {
				return err
			}
			var reclaimed int64
			var deleted []string
			for _, c := range all {
				st, err := s.State(c)
				if err != nil || st.Running {
					continue
				}
				size := dirSize(c.File("upper"))
				if err := removeContainer(app, s, c); err != nil {
					fmt.Fprintf(app.Stderr, "lamina: %v\n", err)
					continue
				}
				reclaimed += size
				deleted = append(deleted, c.ID)
			}
			if len(deleted) > 0 {
				fmt.Fprintln(app.Stdout, "Deleted Containers:")
				for _, id := range deleted {
					fmt.Fprintln(app.Stdout, id)
				}
				fmt.Fprintln(app.Stdout)
			}
			fmt.Fprintf(app.Stdout, "Total reclaimed space: %s\n", humanSize(reclaimed))
			return nil
		},
	}
	c.Flags().BoolVarP(&force, "force", "f", false, "Do not prompt for confirmation")
	return c
}

func newTopCmd(app *App) *cobra.Command {
	c := &cobra.Command{
		Use:   "top CONTAINER [ps OPTIONS]",
		Short: "Display the running processes of a container",
		Args:  cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			s, err := runtime.OpenStore(app.Root)
			if err != nil {
				return err
			}
			c, err := getContainer(s, args[0])
			if err != nil {
				return err
			}
			pids, err := s.Pids(c)
			if err != nil {
				return &StatusError{Code: 1, Err: err}
			}
			psArgs := args[1:]
			if len(psArgs) == 0 {
				psArgs = []string{"-ef"}
			}
			// As docker does: run ps on the host and keep the container's
			// rows, found by the PID column.
			out, err := exec.Command("ps", psArgs...).Output()
			if err != nil {
				return fmt.Errorf("ps: %w", err)
			}
			lines := strings.Split(strings.TrimRight(string(out), "\n"), "\n")
			if len(lines) == 0 {
				return nil
			}
			col := -1
			for i, h := range strings.Fields(lines[0]) {
				if h == "PID" {
					col = i
				}
			}
			if col < 0 {
				return errors.New("couldn't find PID field in ps output")
			}
			want := map[string]bool{}
			for _, p := range pids {
				want[strconv.Itoa(p)] = true
			}
			fmt.Fprintln(app.Stdout, lines[0])
			for _, l := range lines[1:] {
				if f := strings.Fields(l); len(f) > col && want[f[col]] {
					fmt.Fprintln(app.Stdout, l)
				}
			}
			return nil
		},
	}
	c.Flags().SetInterspersed(false)
	return c
}

func newLogsCmd(app *App) *cobra.Command {
	var follow, timestamps bool
	var tail, since string
	c := &cobra.Command{
		Use:   "logs [OPTIONS] CONTAINER",
		Short: "Fetch the logs of a container",
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
			o := runtime.LogOptions{Tail: -1, Follow: follow, Timestamps: timestamps}
			if tail != "all" && tail != "" {
				n, err := strconv.Atoi(tail)
				if err != nil {
					return fmt.Errorf("invalid value for --tail: %q", tail)
				}
				o.Tail = n
			}
			if since != "" {
				t, err := parseSince(since)
				if err != nil {
					return err
				}
				o.Since = t
			}
			return s.ReadLogs(c, o, app.Stdout, app.Stderr)
		},
	}
	c.Flags().BoolVarP(&follow, "follow", "f", false, "Follow log output")
	c.Flags().BoolVarP(&timestamps, "timestamps", "t", false, "Show timestamps")
	c.Flags().StringVarP(&tail, "tail", "n", "all", "Number of lines to show from the end of the logs")
	c.Flags().StringVar(&since, "since", "", "Show logs since timestamp or relative (e.g. 42m)")
	return c
}

func parseSince(s string) (time.Time, error) {
	if d, err := time.ParseDuration(s); err == nil {
		return time.Now().Add(-d), nil
	}
	if t, err := time.Parse(time.RFC3339Nano, s); err == nil {
		return t, nil
	}
	if n, err := strconv.ParseInt(s, 10, 64); err == nil {
		return time.Unix(n, 0), nil
	}
	return time.Time{}, fmt.Errorf("invalid value for --since: %q", s)
}

// dirSize is the bytes of the files under dir (docker's SizeRw).
func dirSize(dir string) int64 {
	var n int64
	_ = walkSize(dir, &n)
	return n
}

func walkSize(dir string, n *int64) error {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return err
	}
	for _, e := range entries {
		info, err := e.Info()
		if err != nil {
			continue
		}
		if e.IsDir() {
			_ = walkSize(dir+"/"+e.Name(), n)
			continue
		}
		if info.Mode().IsRegular() {
			*n += info.Size()
		}
	}
	return nil
}
