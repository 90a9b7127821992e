package layerstore

import (
	"os"
	"syscall"
)

// crashEnv names a crash point at which the process kills itself with
// SIGKILL. Tests use it to crash lamina at each step of a commit or a
// delete, deterministically, and then check that fsck finds the store
// consistent; random kills alone rarely land inside a short transaction.
const crashEnv = "LAMINA_TEST_CRASH_AT"

// crashPoint dies here if the test asked for it.
func crashPoint(name string) {
	if os.Getenv(crashEnv) == name {
		syscall.Kill(os.Getpid(), syscall.SIGKILL)
		select {}
	}
}
