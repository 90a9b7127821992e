// Command lamina is the docker-compatible, daemonless container CLI.
package main

import (
	"os"

	"github.com/lamina-project/lamina/cli"
	_ "github.com/lamina-project/lamina/runtime/nsenter"
)

func main() {
	os.Exit(cli.Main(os.Args[1:], os.Stdin, os.Stdout, os.Stderr))
}
