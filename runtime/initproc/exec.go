package initproc

import (
	"errors"
	"fmt"
	"os"
	goruntime "runtime"

	"golang.org/x/sys/unix"
)

// ExecCommand is the hidden argument of lamina's exec helper, which starts
// inside a running container (see package nsenter) and execs the command
// with the container's confinement.
const ExecCommand = "__exec"

// ExecInit is the exec helper's body, inside the container's namespaces
// and cgroups already (package nsenter put it there). It returns only on
// failure, after telling the CLI why.
func ExecInit() error {
	goruntime.LockOSThread()
	// Docker's umask, whatever the monitor's (a FUSE server runs with 0).
	unix.Umask(0o022)
	sock := os.NewFile(3, "sync")
	m, _, err := RecvSync(sock)
	if err != nil || m.Type != "exec" || m.Exec == nil || m.Exec.Process == nil {
		return fmt.Errorf("exec helper: no request: %v", err)
	}
	req := m.Exec
	fail := failer(sock)
	if req.Process.Terminal {
		if err := setupConsole(sock, false); err != nil {
			return fail(125, err)
		}
		// The CLI sizes the pty from the master it was sent; the command
		// starts once it has (see runtime.Exec).
		if m, _, err := RecvSync(sock); err != nil || m.Type != "pty-ready" {
			return fail(125, fmt.Errorf("exec helper: no pty-ready: %v", err))
		}
	}
	u, path, err := prepareProcess(req.Process, req.User, nil)
	if err != nil {
		var ee *ExecError
		if errors.As(err, &ee) {
			return fail(ee.Code, err)
		}
		return fail(125, err)
	}
	code, err := execProcess(req.Process, u, path, req.Filter, false)
	return fail(code, err)
}
