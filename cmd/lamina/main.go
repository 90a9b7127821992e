// Command lamina is the docker-compatible, daemonless container CLI.
package main

import (
	"os"

	"github.com/lamina-project/lamina/cli"
	// Its initialisation puts the start-up heap on a huge page.
	_ "github.com/lamina-project/lamina/internal/hugeheap"
	_ "github.com/lamina-project/lamina/runtime/nsenter"
)

func main() {
	os.Exit(cli.Main(os.Args[1:], os.Stdin, os.Stdout, os.Stderr))
}
