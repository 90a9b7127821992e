//go:build cgo

package hugeheap

/*
#include <malloc.h>
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <unistd.h>

// lamina_one_arena runs before main, so before any thread: it gives the
// whole process glibc's main malloc arena only (see oneArena).
__attribute__((constructor)) static void lamina_one_arena(void) {
	mallopt(M_ARENA_MAX, 1);
}

static void *lamina_malloc_thread(void *arg) {
	return malloc(64);
}

// lamina_thread_malloc_in_brk reports whether memory malloc'd by a new
// thread comes from the main arena: below the program break.
static int lamina_thread_malloc_in_brk(void) {
	pthread_t t;
	void *p = 0;
	if (pthread_create(&t, 0, lamina_malloc_thread, 0) != 0 || pthread_join(t, &p) != 0 || p == 0) {
		return -1;
	}
	int in = (uintptr_t)p < (uintptr_t)sbrk(0);
	free(p);
	return in;
}
*/
import "C"

// oneArena: in a lamina built with cgo (the CLI and a container's
// monitor), the C part sets glibc's M_ARENA_MAX to 1 at start. Go does
// not use malloc, but a cgo program's threads each call it (the runtime's
// thread start, then glibc's per-thread cache), and glibc gives each new
// thread an arena of its own: a 64 MiB mapping whose first pages each
// thread then faults in. A lamina run --rm made about ten threads and
// took 40 to 80 page faults (13.5 us each here) for arenas that hold a
// few hundred bytes. With one arena the threads share the main heap's
// pages. The little C in lamina (its constructors, libseccomp compiling
// a profile once per cache miss) is not where malloc contention matters.
const oneArena = true

// threadMallocInMainArena reports whether a new thread's malloc is served
// from the main arena (for the test of the constructor).
func threadMallocInMainArena() (bool, error) {
	switch C.lamina_thread_malloc_in_brk() {
	case 1:
		return true, nil
	case 0:
		return false, nil
	}
	return false, errThread
}
