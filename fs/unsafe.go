package fs

import "unsafe"

// unsafePointer converts between the identical Stat_t layouts of
// golang.org/x/sys/unix and syscall, which go-fuse takes.
func unsafePointer[T any](p *T) unsafe.Pointer { return unsafe.Pointer(p) }
