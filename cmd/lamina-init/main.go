// Command lamina-init is a container's init: lamina's container monitor
// runs it in the container's new namespaces, where it builds the root
// filesystem and execs the container's command (package initproc).
//
// It is a binary of its own, with none of lamina's other packages and no
// cgo, because it starts on the path of every `lamina run`: it starts in
// about half the time of the lamina binary and with half the page faults.
// The monitor runs the lamina-init installed next to the lamina binary,
// from a sealed copy; without one, it runs lamina itself as init.
package main

import (
	"os"

	"github.com/lamina-project/lamina/runtime/initproc"
	// Its initialisation puts the start-up heap on a huge page.
	_ "github.com/lamina-project/lamina/internal/hugeheap"
)

func main() {
	// Init returns only on failure, after telling the monitor why.
	if err := initproc.Init(); err != nil {
		os.Stderr.WriteString("lamina-init: " + err.Error() + "\n")
	}
	os.Exit(125)
}
