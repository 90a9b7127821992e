package runtime

import "github.com/lamina-project/lamina/runtime/initproc"

// The container side (package initproc) names these; they are repeated
// here for the CLI, which knows the runtime only.
const (
	// InitCommand is the hidden argument that makes the lamina binary a
	// container's init, where no lamina-init binary is installed.
	InitCommand       = initproc.InitCommand
	ExitCannotExecute = initproc.ExitCannotExecute
	ExitNotFound      = initproc.ExitNotFound
	// ExecCommand is the hidden argument of lamina's exec helper, which
	// starts inside a running container (see package nsenter) and execs
	// the command with the container's confinement.
	ExecCommand = initproc.ExecCommand
)

// ExecError is a command that could not run, with docker's exit code for
// it (126 cannot execute, 127 not found).
type ExecError = initproc.ExecError
