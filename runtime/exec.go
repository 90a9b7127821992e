package runtime

import (
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strconv"
	"strings"

	"github.com/lamina-project/lamina/runtime/initproc"
	"github.com/opencontainers/runtime-spec/specs-go"
)

// ExecOptions are docker exec's flags.
type ExecOptions struct {
	Args       []string
	Env        []string // added to the container's
	User       string   // "" = the container's user
	Cwd        string   // "" = the container's working directory
	Tty        bool
	Privileged bool
	// Detach returns as soon as the command runs (docker exec -d).
	Detach bool
	// OnPty receives the pty master when Tty is set: the pty is made in
	// the container's devpts, as docker's is, so the process sees a
	// terminal name of its own.
	OnPty func(master *os.File)
}

// Exec runs a process inside the running container c, with its
// namespaces, cgroups, capabilities, seccomp filter and no_new_privs, and
// returns its exit code. A command that cannot be found or run is an
// *ExecError (127/126).
func (s *Store) Exec(c *Container, o ExecOptions, stdin io.Reader, stdout, stderr io.Writer) (int, error) {
	st, err := s.running(c)
	if err != nil {
		return 125, err
	}
	if st.Paused {
		return 125, fmt.Errorf("container %s is paused, unpause the container before exec", c.ID[:12])
	}
	if len(o.Args) == 0 {
		return 125, errors.New("no command specified")
	}
	spec, err := c.RuntimeSpec()
	if err != nil {
		return 125, err
	}
	proc := *spec.Process
	proc.Args = o.Args
	proc.Terminal = o.Tty
	proc.Env = mergeEnv(spec.Process.Env, o.Env)
	if o.Cwd != "" {
		proc.Cwd = o.Cwd
	}
	if o.Privileged {
		all := initproc.AllCapNames()
		proc.Capabilities = &specs.LinuxCapabilities{Bounding: all, Effective: all, Permitted: all}
	}
	user := spec.Annotations[UserAnnotation]
	if o.User != "" {
		user = o.User
	}
	req := &initproc.ExecRequest{Process: &proc, User: user}
	if spec.Linux != nil && !o.Privileged {
		if req.Filter, err = seccompFilter(s.seccompDir(), spec.Linux.Seccomp); err != nil {
			return 125, err
		}
	}

	exe, err := sealedExe()
	if err != nil {
		return 125, err
	}
	defer exe.Close()
	parent, child, err := initproc.NewSyncPair()
	if err != nil {
		return 125, err
	}
	defer parent.Close()
	var cgroups []string
	if st.Cgroup != nil {
		cgroups = st.Cgroup.ProcsFiles()
	}
	cmd := &exec.Cmd{
		Path: "/proc/self/fd/4",
		Args: []string{"lamina-exec", ExecCommand},
		Env: []string{
			"_LAMINA_NSENTER_PID=" + strconv.Itoa(st.Pid),
			"_LAMINA_NSENTER_CGROUPS=" + strings.Join(cgroups, ":"),
		},
		Stdin: stdin, Stdout: stdout, Stderr: stderr,
		ExtraFiles: []*os.File{child, exe},
	}
	if err := cmd.Start(); err != nil {
		child.Close()
		return 125, fmt.Errorf("exec: %w", err)
	}
	child.Close()
	if err := initproc.SendSync(parent, initproc.SyncMsg{Type: "exec", Exec: req}); err != nil {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		return 125, err
	}
	m, fs, rerr := initproc.RecvSync(parent)
	if rerr == nil && m.Type == "pty" {
		if o.OnPty != nil && len(fs) == 1 {
			o.OnPty(fs[0])
		} else {
			initproc.CloseFiles(fs)
		}
		// OnPty has given the pty its size: the command may start (it
		// would otherwise race the size, and see 0x0).
		if err := initproc.SendSync(parent, initproc.SyncMsg{Type: "pty-ready"}); err != nil {
			rerr = err
		} else {
			m, _, rerr = initproc.RecvSync(parent)
		}
	}
	if o.Detach && errors.Is(rerr, io.EOF) {
		// The command runs; it is reparented when this process exits.
		go func() { _ = cmd.Wait() }()
		return 0, nil
	}
	werr := cmd.Wait()
	if rerr == nil && m.Type == "error" {
		if m.Code == ExitNotFound || m.Code == ExitCannotExecute {
			return m.Code, &ExecError{Code: m.Code, Msg: m.Error}
		}
		return 125, fmt.Errorf("exec: %s", m.Error)
	}
	code, err := ExitCode(cmd.ProcessState, werr)
	if code == 125 && rerr != nil && !errors.Is(rerr, io.EOF) {
		return 125, fmt.Errorf("exec: %w", rerr)
	}
	return code, err
}

// mergeEnv returns base with the KEY=VALUE pairs of add replacing or
// extending it.
func mergeEnv(base, add []string) []string {
	out := append([]string(nil), base...)
	for _, kv := range add {
		k, _, _ := strings.Cut(kv, "=")
		replaced := false
		for i, e := range out {
			if ek, _, _ := strings.Cut(e, "="); ek == k {
				out[i] = kv
				replaced = true
			}
		}
		if !replaced {
			out = append(out, kv)
		}
	}
	return out
}
