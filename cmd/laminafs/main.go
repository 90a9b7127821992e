// Command laminafs is lamina's FUSE union filesystem, with fuse-overlayfs's
// command line.
package main

func main() {}
