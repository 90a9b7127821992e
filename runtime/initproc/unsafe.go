package initproc

import "unsafe"

// uintptrOf passes a slice to a raw syscall.
func uintptrOf(s []uint32) uintptr { return uintptr(unsafe.Pointer(&s[0])) }
