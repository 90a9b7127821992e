#!/bin/sh
# build-init.sh OUT builds cmd/lamina-init, a container's init, as a static
# binary at OUT: with musl when musl-gcc is installed (`make deps`
# installs musl-tools), else with the C compiler ($CC, default cc) and
# glibc. The Makefile and the tests (internal/testutil) both build it
# here.
#
# Why musl: init starts on the path of every `lamina run`, and glibc's
# static start-up detects the CPU's features and caches with some dozens
# of CPUID instructions, each a trap to the hypervisor on a VM (6.5 us on
# the 2-vCPU test machine): a static no-op costs 0.52-0.56 ms of CPU
# with glibc there, 0.07-0.09 ms with musl (perf stat, 300 runs each).
#
# musl's headers have no linux/ or asm/, which init.c includes (openat2,
# seccomp, capabilities): a directory of links to the kernel's headers
# gives them, and nothing of glibc's.
set -eu
out=$1
src=$(dirname "$0")/../cmd/lamina-init/init.c
flags="-static -O2 -Wall -Wextra -Werror"
if command -v musl-gcc >/dev/null 2>&1; then
	kh=$(mktemp -d)
	trap 'rm -rf "$kh"' EXIT
	multiarch=$(${CC:-cc} -print-multiarch 2>/dev/null || true)
	ln -s /usr/include/linux "$kh/linux"
	ln -s /usr/include/asm-generic "$kh/asm-generic"
	if [ -n "$multiarch" ] && [ -d "/usr/include/$multiarch/asm" ]; then
		ln -s "/usr/include/$multiarch/asm" "$kh/asm"
	else
		ln -s /usr/include/asm "$kh/asm"
	fi
	# shellcheck disable=SC2086
	musl-gcc $flags -isystem "$kh" -o "$out" "$src"
else
	# shellcheck disable=SC2086
	${CC:-cc} $flags -o "$out" "$src"
fi
