// Command lamina is the docker-compatible, daemonless container CLI.
package main

import (
	"os"

	"github.com/lamina-project/lamina/cli"
	// Its initialisation puts the start-up heap on a huge page.
	_ "github.com/lamina-project/lamina/internal/hugeheap"
	"github.com/lamina-project/lamina/runtime/detach"
	_ "github.com/lamina-project/lamina/runtime/nsenter"
)

func main() {
	// `lamina run` was split in two before Go started: this is the half
	// that creates and monitors the container.
	if stub, ok := detach.Take(); ok {
		os.Exit(cli.MainDetached(stub, os.Args[1:], os.Stdin, os.Stdout, os.Stderr))
	}
	os.Exit(cli.Main(os.Args[1:], os.Stdin, os.Stdout, os.Stderr))
}
