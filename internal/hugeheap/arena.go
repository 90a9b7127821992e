package hugeheap

import "errors"

var errThread = errors.New("could not start a thread to malloc in")
