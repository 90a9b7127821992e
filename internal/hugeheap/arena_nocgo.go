//go:build !cgo

package hugeheap

// oneArena is false without cgo: such a program has no
// malloc (see arena_cgo.go).
const oneArena = false

func threadMallocInMainArena() (bool, error) { return false, errThread }
