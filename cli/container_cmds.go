package cli

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/docker/go-units"
	"github.com/lamina-project/lamina/driver"
	"github.com/lamina-project/lamina/layerstore"
	"github.com/lamina-project/lamina/runtime"
	"github.com/lamina-project/lamina/runtime/initproc"
	"github.com/spf13/cobra"
)

// containerCommands returns the container commands: docker's top-level
// forms, and the `container` group with the same commands and `prune`.
// (The hidden entry points the binary is re-executed as are runHidden's.)
func containerCommands(app *App) []*cobra.Command {
	group := newContainerGroup()
	group.AddCommand(append(containerVerbs(app), newContainerPruneCmd(app),
		withUse(newPsCmd(app), "ls [OPTIONS]", "ps", "list"))...)
	return append(containerVerbs(app), newPsCmd(app), group)
}

// newContainerGroup is the `lamina container` command, without its
// commands.
func newContainerGroup() *cobra.Command {
	return &cobra.Command{Use: "container", Short: "Manage containers"}
}

// containerVerbs are the commands that exist both at the top level and in
// the container group; cobra needs a fresh command for each place.
func containerVerbs(app *App) []*cobra.Command {
	return []*cobra.Command{
		newCreateCmd(app), newRunCmd(app), newStartCmd(app), newStopCmd(app), newRestartCmd(app),
		newKillCmd(app), newPauseCmd(app, true), newPauseCmd(app, false), newRmCmd(app),
		newExecCmd(app), newLogsCmd(app), newContainerInspectCmd(app), newWaitCmd(app),
		newTopCmd(app), newRenameCmd(app), newAttachCmd(app),
	}
}

// runHidden runs the entry points the lamina binary is re-executed as: a
// container's monitor, its init and the exec helper. They skip the command
// tree, which no user types and which would cost each of them its build:
// one of each starts with every `lamina run`. ok is false when args name
// none of them.
func runHidden(args []string, stderr io.Writer) (code int, ok bool) {
	if len(args) == 0 {
		return 0, false
	}
	var err error
	switch args[0] {
	case runtime.MonitorCommand:
		err = runtime.RunMonitor(args[1:], autoRemove(stderr))
	case runtime.InitCommand:
		err = initproc.Init()
	case runtime.ExecCommand:
		err = initproc.ExecInit()
	default:
		return 0, false
	}
	if err != nil {
		fmt.Fprintf(stderr, "lamina: %v\n", err)
		return 125, true
	}
	return 0, true
}

// autoRemove is the monitor's hook for --rm: it removes a container that
// asked for it once it has stopped. The container is gone (unlisted, its
// name free) before its caller hears the exit status, as with docker; its
// files and its hold on the image, which no command sees once it is gone
// (layerstore.Store.HolderGone), are let go of after.
func autoRemove(stderr io.Writer) runtime.ExitHook {
	return func(s *runtime.Store, c *runtime.Container, st *runtime.State) func() {
		if !c.HostConfig.AutoRemove {
			return nil
		}
		app := &App{Root: s.Root(), Stderr: stderr}
		reclaim, err := s.UnlistExited(c)
		if err != nil {
			fmt.Fprintf(stderr, "lamina: --rm: %v\n", err)
			return nil
		}
		return func() {
			err := reclaim()
			if err == nil {
				err = dropImageRef(app, c)
			}
			if err != nil {
				fmt.Fprintf(stderr, "lamina: --rm: %v\n", err)
			}
		}
	}
}

// runFlags are docker create/run's flags.
type runFlags struct {
	detach, interactive, tty, rm bool
	name, user, workdir          string
	entrypoint                   *string
	hostname                     string
	env, envFile                 []string
	readOnly, privileged         bool
	capAdd, capDrop, secOpt      []string
	memory                       string
	cpus                         float64
	pidsLimit                    int64
	network                      string
	volumes, tmpfs, ulimits      []string
	labels                       []string
	storageDriver                string
}

func (f *runFlags) register(c *cobra.Command, run bool) {
	fl := c.Flags()
	fl.SetInterspersed(false)
	if run {
		fl.BoolVarP(&f.detach, "detach", "d", false, "Run container in background and print container ID")
	}
	fl.BoolVarP(&f.interactive, "interactive", "i", false, "Keep STDIN open even if not attached")
	fl.BoolVarP(&f.tty, "tty", "t", false, "Allocate a pseudo-TTY")
	fl.BoolVar(&f.rm, "rm", false, "Automatically remove the container when it exits")
	fl.StringVar(&f.name, "name", "", "Assign a name to the container")
	fl.StringVarP(&f.user, "user", "u", "", "Username or UID (format: <name|uid>[:<group|gid>])")
	fl.StringVarP(&f.workdir, "workdir", "w", "", "Working directory inside the container")
	// -h is --hostname, as in docker; help is --help only.
	fl.Bool("help", false, "Print usage")
	fl.StringVarP(&f.hostname, "hostname", "h", "", "Container host name")
	stringArrayVarP(fl, &f.env, "env", "e", "Set environment variables")
	stringArrayVarP(fl, &f.envFile, "env-file", "", "Read in a file of environment variables")
	fl.BoolVar(&f.readOnly, "read-only", false, "Mount the container's root filesystem as read only")
	fl.BoolVar(&f.privileged, "privileged", false, "Give extended privileges to this container")
	stringArrayVarP(fl, &f.capAdd, "cap-add", "", "Add Linux capabilities")
	stringArrayVarP(fl, &f.capDrop, "cap-drop", "", "Drop Linux capabilities")
	stringArrayVarP(fl, &f.secOpt, "security-opt", "", "Security Options (seccomp=unconfined|FILE, no-new-privileges)")
	fl.StringVarP(&f.memory, "memory", "m", "", "Memory limit")
	fl.Float64Var(&f.cpus, "cpus", 0, "Number of CPUs")
	fl.Int64Var(&f.pidsLimit, "pids-limit", 0, "Tune container pids limit (set -1 for unlimited)")
	fl.StringVar(&f.network, "network", "none", "Connect a container to a network (none, host)")
	fl.StringVar(&f.network, "net", "none", "Connect a container to a network (none, host)")
	_ = fl.MarkHidden("net")
	stringArrayVarP(fl, &f.volumes, "volume", "v", "Bind mount a volume (HOST:CTR[:ro])")
	stringArrayVarP(fl, &f.tmpfs, "tmpfs", "", "Mount a tmpfs directory")
	stringArrayVarP(fl, &f.ulimits, "ulimit", "", "Ulimit options")
	stringArrayVarP(fl, &f.labels, "label", "l", "Set meta data on a container")
	fl.StringVar(&f.storageDriver, "storage-driver", os.Getenv("LAMINA_STORAGE_DRIVER"), "Storage driver (laminafs, overlay, vfs)")
	c.PreRun = func(cmd *cobra.Command, args []string) {
		if cmd.Flags().Changed("entrypoint") {
			v, _ := cmd.Flags().GetString("entrypoint")
			f.entrypoint = &v
		}
	}
	fl.String("entrypoint", "", "Overwrite the default ENTRYPOINT of the image")
}

// createContainer makes container id (runtime.NewID) from image and the
// flags: resolves the image, builds the spec, records the container and
// takes a reference on the image. The reference is still being recorded
// when it returns: the caller must have hold's result before the
// container's command runs, and remove the container if it failed.
//
// p, when not nil, is the monitor prepared to run the container: one run
// in this process is handed the container (Pending.Handoff) as soon as
// its directories and host files exist, and mounts its root filesystem
// and bootstraps its init while the record is written. It starts the
// command once the record is complete and the hold recorded.
func createContainer(app *App, f *runFlags, id, image string, cmdArgs []string, p *runtime.Pending) (c *runtime.Container, s *runtime.Store, hold *imageHold, err error) {
	go warmRecordEncoder()
	ls, err := openStore(app)
	if err != nil {
		return nil, nil, nil, err
	}
	defer func() {
		if hold == nil { // else the hold closes ls once recorded
			ls.Close()
		}
	}()
	img, err := ls.ResolveImage(image)
	if err != nil {
		if errors.Is(err, layerstore.ErrNotFound) {
			return nil, nil, nil, fmt.Errorf("Unable to find image '%s' locally: %w", image, err)
		}
		return nil, nil, nil, err
	}
	ic := img.Config.Config
	entrypoint, cmd := ic.Entrypoint, ic.Cmd
	if f.entrypoint != nil {
		entrypoint, cmd = nil, nil
		if *f.entrypoint != "" {
			entrypoint = []string{*f.entrypoint}
		}
	}
	if len(cmdArgs) > 0 {
		cmd = cmdArgs
	}
	args := append(append([]string(nil), entrypoint...), cmd...)
	if len(args) == 0 {
		return nil, nil, nil, errors.New("no command specified")
	}
	env := append([]string(nil), ic.Env...)
	for _, file := range f.envFile {
		kvs, err := readEnvFile(file)
		if err != nil {
			return nil, nil, nil, err
		}
		env = mergeKV(env, kvs)
	}
	env = mergeKV(env, expandEnv(f.env))
	user := ic.User
	if f.user != "" {
		user = f.user
	}
	workdir := ic.WorkingDir
	if f.workdir != "" {
		workdir = f.workdir
	}
	opts := runtime.Options{
		Args: args, Env: env, Cwd: workdir, User: user, Hostname: f.hostname,
		Terminal: f.tty, ReadOnly: f.readOnly, Privileged: f.privileged,
		CapAdd: f.capAdd, CapDrop: f.capDrop, CPUs: f.cpus, PidsLimit: f.pidsLimit,
		Network: f.network, Binds: f.volumes, Tmpfs: f.tmpfs,
	}
	for _, so := range f.secOpt {
		k, v, _ := strings.Cut(so, "=")
		if strings.Contains(so, ":") && !strings.Contains(so, "=") {
			k, v, _ = strings.Cut(so, ":")
		}
		switch {
		case k == "no-new-privileges" && (v == "" || v == "true"):
			opts.NoNewPrivileges = true
		case k == "no-new-privileges" && v == "false":
		case k == "seccomp" && v == "unconfined":
			opts.Seccomp = "unconfined"
		case k == "seccomp" && v != "":
			b, err := os.ReadFile(v)
			if err != nil {
				return nil, nil, nil, fmt.Errorf("opening seccomp profile (%s) failed: %w", v, err)
			}
			opts.Seccomp = string(b)
		default:
			return nil, nil, nil, fmt.Errorf("invalid --security-opt: %q", so)
		}
	}
	if f.memory != "" {
		n, err := units.RAMInBytes(f.memory)
		if err != nil {
			return nil, nil, nil, fmt.Errorf("invalid argument %q for \"-m, --memory\" flag: %w", f.memory, err)
		}
		if n < 6<<20 {
			return nil, nil, nil, errors.New("Minimum memory limit allowed is 6MB")
		}
		opts.Memory = n
	}
	for _, u := range f.ulimits {
		rl, err := runtime.ParseUlimit(u)
		if err != nil {
			return nil, nil, nil, err
		}
		opts.Ulimits = append(opts.Ulimits, rl)
	}
	drv := f.storageDriver
	if drv == "" {
		drv = runtime.DefaultDriver()
	}
	if err := runtime.CheckDriver(drv); err != nil {
		return nil, nil, nil, err
	}
	s, err = runtime.OpenStore(app.Root)
	if err != nil {
		return nil, nil, nil, err
	}
	lower := img.LowerDirs(ls)
	initLayer, err := s.InitLayer(img.ID.String(), lower)
	if err != nil {
		return nil, nil, nil, err
	}
	if initLayer != "" {
		lower = append([]string{initLayer}, lower...)
	}
	dir := filepath.Join(app.Root, "containers", id)
	spec, err := runtime.NewSpec(id, filepath.Join(dir, "merged"), opts)
	if err != nil {
		return nil, nil, nil, err
	}
	labels := map[string]string{}
	for _, l := range f.labels {
		k, v, _ := strings.Cut(l, "=")
		labels[k] = v
	}
	c = &runtime.Container{
		ID: id, Name: f.name, Created: time.Now().UTC(),
		Path: args[0], Args: args[1:],
		Image: img.ID.String(), ImageName: image, ImageSize: img.Size,
		Config: runtime.Config{
			Hostname: spec.Hostname, User: user, Env: spec.Process.Env, Cmd: cmd, Entrypoint: entrypoint,
			WorkingDir: workdir, Image: image, Tty: f.tty, OpenStdin: f.interactive,
			StdinOnce: f.interactive && !f.detach, AttachStdin: f.interactive && !f.detach,
			AttachStdout: !f.detach, AttachStderr: !f.detach, Labels: labels,
		},
		HostConfig: runtime.HostConfig{
			Binds: f.volumes, Tmpfs: f.tmpfs, AutoRemove: f.rm, ReadonlyRootfs: f.readOnly,
			Privileged: f.privileged, CapAdd: f.capAdd, CapDrop: f.capDrop, SecurityOpt: f.secOpt,
			Memory: opts.Memory, NanoCpus: int64(f.cpus * 1e9), PidsLimit: f.pidsLimit, NetworkMode: f.network,
		},
		Run:    opts,
		Spec:   spec,
		Driver: drv,
		Layers: driver.Layers{Lower: lower, Upper: filepath.Join(dir, "upper"), Work: filepath.Join(dir, "work")},
	}
	if spec.Annotations == nil {
		spec.Annotations = map[string]string{}
	}
	// The container's hold on its image is recorded while the rest of the
	// container is written: the transaction waits for two fdatasyncs of
	// the store's metadata, a millisecond on the path of every run. It
	// starts once the container's directory exists, so that an rmi that
	// sees the hold finds its holder (holderGone); an rmi that commits
	// first leaves no image for the hold, which then fails the create.
	// The directories of its layer and mount, and the host files it
	// bind-mounts (runtime.WriteHostFiles), are made then too, and the
	// container handed to p's monitor (see above).
	var ref chan error
	var h *imageHold
	err = s.CreateWith(c, func() (func(error), error) {
		ref = make(chan error, 1)
		go func() { ref <- ls.AddContainerRef(img.ID, id) }()
		h = &imageHold{ref: ref, close: ls.Close}
		for _, d := range []string{"upper", "work", "merged"} {
			if err := os.Mkdir(c.File(d), 0o755); err != nil {
				return nil, fmt.Errorf("create container: %w", err)
			}
		}
		if err := runtime.WriteHostFiles(c); err != nil {
			return nil, fmt.Errorf("create container: %w", err)
		}
		if p == nil {
			return nil, nil
		}
		p.Fresh()
		p.Gate(h.result)
		if !p.Handoff(c) {
			return nil, nil
		}
		// A record that fails stops the monitor, which lets go of the
		// container's directory (its union unmounted) before it goes.
		return func(err error) {
			p.Recorded(err)
			<-p.Done()
		}, nil
	})
	// undo drops what was made after a failure, the hold last.
	undo := func(err error) error {
		if ref != nil && <-ref == nil {
			_ = ls.RemoveContainerRef(img.ID, id)
		}
		return err
	}
	if err != nil {
		return nil, nil, nil, undo(err)
	}
	if p != nil && p.Early() {
		p.Recorded(nil)
	}
	return c, s, h, nil
}

// warmRecordEncoder builds encoding/json's encoders for a container's
// record (a fresh process builds them at its first encoding) while
// createContainer resolves the image, so that the record's encoding in
// CreateWith finds them made. Started at the process's start instead, it
// competed with the spawn of the container's init and cost more than it
// saved.
func warmRecordEncoder() { _, _ = json.Marshal(&runtime.Container{}) }

// imageHold is a new container's reference on its image, which
// createContainer leaves being recorded: the transaction waits for two
// fdatasyncs of the store's metadata, 1-2 ms that a run spends mounting
// the container's root filesystem and starting its init instead
// (runtime.Pending.Gate holds the command's start until the hold is
// recorded). A reference that failed (an rmi of the image committed
// first) fails the create: the caller removes the container.
type imageHold struct {
	ref   chan error
	close func() error // the layer store's, once the hold is recorded
	once  sync.Once
	err   error
}

// result waits for the hold to be recorded and returns what became of it,
// the same every time; safe for concurrent use.
func (h *imageHold) result() error {
	h.once.Do(func() {
		h.err = <-h.ref
		_ = h.close()
	})
	return h.err
}

// failed reports whether the hold failed and if so removes c, which the
// caller's monitor, if any, has let go of.
func (h *imageHold) failed(s *runtime.Store, c *runtime.Container) error {
	err := h.result()
	if err != nil {
		_ = s.Delete(c)
	}
	return err
}

// expandEnv turns -e KEY (no value) into KEY=<host value>, as docker does;
// an unset host variable is dropped.
func expandEnv(in []string) []string {
	var out []string
	for _, e := range in {
		if strings.Contains(e, "=") {
			out = append(out, e)
		} else if v, ok := os.LookupEnv(e); ok {
			out = append(out, e+"="+v)
		}
	}
	return out
}

func readEnvFile(path string) ([]string, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("env file: %w", err)
	}
	defer f.Close()
	var lines []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		l := strings.TrimSpace(sc.Text())
		if l == "" || strings.HasPrefix(l, "#") {
			continue
		}
		lines = append(lines, l)
	}
	return expandEnv(lines), sc.Err()
}

func mergeKV(base, add []string) []string {
	out := append([]string(nil), base...)
	for _, kv := range add {
		k, _, _ := strings.Cut(kv, "=")
		found := false
		for i, e := range out {
			if ek, _, _ := strings.Cut(e, "="); ek == k {
				out[i], found = kv, true
			}
		}
		if !found {
			out = append(out, kv)
		}
	}
	return out
}

// removeContainer deletes c's directory and drops its image reference.
func removeContainer(app *App, s *runtime.Store, c *runtime.Container) error {
	if err := s.Delete(c); err != nil {
		return err
	}
	return dropImageRef(app, c)
}

// dropImageRef drops a removed container's hold on its image.
func dropImageRef(app *App, c *runtime.Container) error {
	ls, err := openStore(app)
	if err != nil {
		return err
	}
	defer ls.Close()
	if err := ls.RemoveContainerRef(digestOf(c.Image), c.ID); err != nil && !errors.Is(err, layerstore.ErrNotFound) {
		return err
	}
	return nil
}

func newCreateCmd(app *App) *cobra.Command {
	f := &runFlags{}
	c := &cobra.Command{
		Use:   "create [OPTIONS] IMAGE [COMMAND] [ARG...]",
		Short: "Create a new container",
		Args:  cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, s, hold, err := createContainer(app, f, runtime.NewID(), args[0], args[1:], nil)
			if err != nil {
				return err
			}
			if err := hold.failed(s, c); err != nil {
				return err
			}
			fmt.Fprintln(app.Stdout, c.ID)
			return nil
		},
	}
	f.register(c, false)
	return c
}

func newRunCmd(app *App) *cobra.Command {
	f := &runFlags{}
	c := &cobra.Command{
		Use:   "run [OPTIONS] IMAGE [COMMAND] [ARG...]",
		Short: "Create and run a new container from an image",
		Args:  cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if f.tty && f.interactive && !f.detach && terminalFd(app.Stdin) < 0 {
				return &StatusError{Code: 1, Err: errors.New("the input device is not a TTY")}
			}
			s, err := runtime.OpenStore(app.Root)
			if err != nil {
				return err
			}
			// The monitor starts while the container is made, and knows
			// its ID ahead (see runtime.Store.PrepareHere).
			id := app.newID()
			p, err := app.prepare(s, !f.detach, id)
			if err != nil {
				return err
			}
			c, _, hold, err := createContainer(app, f, id, args[0], args[1:], p)
			if err != nil {
				p.Abort()
				return err
			}
			// A monitor run here was handed the container early and
			// starts its command once its hold on the image is recorded;
			// a monitor process cannot wait for it, so the CLI does
			// before starting it.
			if !p.Early() {
				if err := hold.failed(s, c); err != nil {
					p.Abort()
					return err
				}
			}
			if f.detach {
				if _, err := app.start(p, c, runtime.AttachOptions{}); err != nil {
					return startError(app, s, c, hold, err)
				}
				fmt.Fprintln(app.Stdout, c.ID)
				return nil
			}
			return startAttached(app, s, c, hold, f.interactive, p)
		},
	}
	f.register(c, true)
	return c
}

// startError turns a failed start into docker's exit code, removing an
// --rm container that never ran, and a container whose hold on its image
// failed (hold, nil for a container created before), which then fails
// with the hold's error.
func startError(app *App, s *runtime.Store, c *runtime.Container, hold *imageHold, err error) error {
	if hold != nil {
		if err := hold.failed(s, c); err != nil {
			return err
		}
	}
	if c.HostConfig.AutoRemove {
		_ = removeContainer(app, s, c)
	}
	var ee *runtime.ExecError
	if errors.As(err, &ee) {
		return &StatusError{Code: ee.Code, Err: fmt.Errorf("failed to start container %s: %w", c.ID[:12], err)}
	}
	return err
}

// startAttached starts c on p, a monitor prepared for an attached start,
// with the CLI attached to its stdio, and returns its exit status.
func startAttached(app *App, s *runtime.Store, c *runtime.Container, hold *imageHold, stdin bool, p *runtime.Pending) error {
	var startErr error
	st, err := attachStreams(app, c, stdin, func(o runtime.AttachOptions) (*runtime.Attachment, error) {
		a, err := app.start(p, c, o)
		startErr = err
		return a, err
	})
	if startErr != nil {
		return startError(app, s, c, hold, startErr)
	}
	if err != nil {
		return err
	}
	if st.Error != "" && st.ExitCode >= 125 {
		return &StatusError{Code: st.ExitCode, Err: fmt.Errorf("failed to start container %s: %s", c.ID[:12], st.Error)}
	}
	if st.ExitCode != 0 {
		return &StatusError{Code: st.ExitCode}
	}
	return nil
}

func newStartCmd(app *App) *cobra.Command {
	var attach, interactive bool
	c := &cobra.Command{
		Use:   "start [OPTIONS] CONTAINER [CONTAINER...]",
		Short: "Start one or more stopped containers",
		Args:  cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			s, err := runtime.OpenStore(app.Root)
			if err != nil {
				return err
			}
			if attach || interactive {
				if len(args) > 1 {
					return errors.New("you cannot start and attach multiple containers at once")
				}
				c, err := getContainer(s, args[0])
				if err != nil {
					return err
				}
				if st, _ := s.State(c); st != nil && st.Running {
					return nil
				}
				waitMonitorGone(s, c)
				p, err := s.Prepare(true)
				if err != nil {
					return err
				}
				return startAttached(app, s, c, nil, interactive, p)
			}
			return forEach(app, s, args, func(c *runtime.Container) error {
				if st, _ := s.State(c); st != nil && st.Running {
					return nil
				}
				waitMonitorGone(s, c)
				return s.Start(c)
			})
		},
	}
	c.Flags().BoolVarP(&attach, "attach", "a", false, "Attach STDOUT/STDERR and forward signals")
	c.Flags().BoolVarP(&interactive, "interactive", "i", false, "Attach container's STDIN")
	return c
}

// waitMonitorGone waits, for a few seconds at most, for the monitor of a
// container that is not running to end: one that has just reported the
// end of the last run may still be letting go of the container (its
// union, its lock), and a new monitor would find it "already running".
func waitMonitorGone(s *runtime.Store, c *runtime.Container) {
	s.WaitStopped(c, 10*time.Second)
}

// getContainer finds ref, with docker's message when there is none.
func getContainer(s *runtime.Store, ref string) (*runtime.Container, error) {
	c, err := s.Get(ref)
	if errors.Is(err, runtime.ErrNoSuchContainer) {
		return nil, &StatusError{Code: 1, Err: fmt.Errorf("No such container: %s", ref)}
	}
	if errors.Is(err, runtime.ErrAmbiguous) {
		return nil, &StatusError{Code: 1, Err: fmt.Errorf("multiple containers found with provided prefix: %s", ref)}
	}
	return c, err
}

// forEach runs f for each container named in refs, printing each ref on
// success as docker does, and fails (exit 1) if any failed.
func forEach(app *App, s *runtime.Store, refs []string, f func(*runtime.Container) error) error {
	var failed bool
	for _, ref := range refs {
		c, err := getContainer(s, ref)
		if err == nil {
			err = f(c)
		}
		if err != nil {
			var se *StatusError
			if errors.As(err, &se) && se.Err != nil {
				err = se.Err
			}
			fmt.Fprintf(app.Stderr, "lamina: %v\n", err)
			failed = true
			continue
		}
		fmt.Fprintln(app.Stdout, ref)
	}
	if failed {
		return &StatusError{Code: 1}
	}
	return nil
}

// parseSignal accepts docker's forms: KILL, SIGKILL, 9.
func parseSignal(s string) (int, error) {
	if n, err := strconv.Atoi(s); err == nil && n > 0 && n < 65 {
		return n, nil
	}
	name := strings.TrimPrefix(strings.ToUpper(s), "SIG")
	if n, ok := signalNames[name]; ok {
		return n, nil
	}
	return 0, fmt.Errorf("invalid signal: %s", s)
}

var signalNames = map[string]int{
	"HUP": 1, "INT": 2, "QUIT": 3, "ILL": 4, "TRAP": 5, "ABRT": 6, "BUS": 7, "FPE": 8, "KILL": 9,
	"USR1": 10, "SEGV": 11, "USR2": 12, "PIPE": 13, "ALRM": 14, "TERM": 15, "STKFLT": 16,
	"CHLD": 17, "CONT": 18, "STOP": 19, "TSTP": 20, "TTIN": 21, "TTOU": 22, "URG": 23,
	"XCPU": 24, "XFSZ": 25, "VTALRM": 26, "PROF": 27, "WINCH": 28, "IO": 29, "PWR": 30, "SYS": 31,
}
