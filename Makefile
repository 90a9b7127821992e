# lamina's build. `make install` sets up everything (apt packages, Go
# modules, binaries); `make test` runs the whole test suite.
GO        ?= go
CC        ?= gcc
BIN       := $(CURDIR)/bin
PREFIX    ?= /usr/local
APT_PKGS  := gcc libc6-dev musl-tools fuse3 fuse-overlayfs unionfs-fuse attr busybox-static libseccomp-dev python3 fio
TEST_TIMEOUT ?= 20m
export LAMINA_BIN_DIR := $(BIN)

.PHONY: all deps build install test test-short bench bench-run fuzz lint busybox-image peer-test clean

all: build

# deps installs the Debian packages lamina and its tests use, if missing,
# and downloads the Go modules.
deps:
	@missing=""; for p in $(APT_PKGS); do \
		dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q "ok installed" || missing="$$missing $$p"; \
	done; \
	if [ -n "$$missing" ]; then \
		echo "installing:$$missing"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	fi
	@command -v staticcheck >/dev/null 2>&1 || [ -x $$($(GO) env GOPATH)/bin/staticcheck ] || \
		$(GO) install honnef.co/go/tools/cmd/staticcheck@latest
	$(GO) mod download

# lamina-init (a container's init) is a static C program: it starts on the
# path of every lamina run (see cmd/lamina-init/init.c). lamina runs it
# from its own directory; without it, lamina runs its own Go init. It is
# linked with musl where musl-tools is installed, whose start-up skips
# glibc's CPUID probing (scripts/build-init.sh).
# lamina is linked statically too (libseccomp, glibc; the pure-Go
# resolvers), which saves each of its processes the dynamic loader: about
# 6% of a lamina run --rm here.
#
# lamina is built with Go 1.26's randomised heap base turned off, where the
# toolchain still has the switch: the runtime then starts the heap at the
# bottom of its first 4 MiB chunk instead of at a random page of it, and
# internal/hugeheap puts that whole chunk on huge pages, which holds what
# a lamina run --rm allocates. With the random base, half the chunk on
# average was left, the rest of the run's heap took a fault per 4 KiB
# (13.5 us each on this PVM guest): about 450 more faults, 6-7 ms (11%)
# of the run. This is the heap layout of every Go program before 1.26
# (runc, containerd, docker and podman are built that way); the base
# randomisation mainly hardens cgo code, and lamina's C is its own
# constructors and libseccomp compiling a fixed profile. laminafs, a
# long-lived server whose start is not on anyone's path, keeps it.
FIXED_HEAP := $(shell GOEXPERIMENT=norandomizedheapbase64 $(GO) env GOEXPERIMENT >/dev/null 2>&1 && echo norandomizedheapbase64)

build:
	GOEXPERIMENT=$(FIXED_HEAP) $(GO) build -tags netgo,osusergo -ldflags '-extldflags -static' -o $(BIN)/lamina ./cmd/lamina
	CC=$(CC) scripts/build-init.sh $(BIN)/lamina-init
	$(GO) build -o $(BIN)/laminafs ./cmd/laminafs

install: deps build
	install -m 0755 $(BIN)/lamina $(PREFIX)/bin/lamina
	install -m 0755 $(BIN)/lamina-init $(PREFIX)/bin/lamina-init
	install -m 0755 $(BIN)/laminafs $(PREFIX)/bin/laminafs

test: deps build
	$(GO) test -count=1 -timeout $(TEST_TIMEOUT) ./...
	# our additions to the go-fuse and go-digest forks (third_party/*/LAMINA.md)
	cd third_party/go-fuse && $(GO) test -count=1 -run 'InlineReader|InlineBurst' ./fs
	cd third_party/go-digest && $(GO) test -count=1 ./

# test-short skips the long differential and crash runs.
test-short: build
	$(GO) test -short -count=1 ./...

# bench measures laminafs against kernel overlay and the peers (about 30
# minutes; needs root). The table goes to stdout, JSON and an SVG plot to
# docs/. BENCH_FLAGS adds flags, e.g. BENCH_FLAGS='--size small --runs 1'.
BENCH_FLAGS ?=
bench: deps build
	$(BIN)/lamina bench --laminafs $(BIN)/laminafs --json docs/bench.json --plot docs/bench.svg $(BENCH_FLAGS)
	# the layer store: import and export of a 10k-file, 200 MB layer, with tar as the floor
	$(GO) test -run '^$$' -bench 'Import10k|Export10k' -benchtime 2x ./layerstore

fuzz: build
	$(GO) test ./fuzz -run '^$$' -fuzz FuzzOps -fuzztime 60s

lint:
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt: $$out"; exit 1; fi
	$(GO) vet ./...
	$$( command -v staticcheck || echo $$($(GO) env GOPATH)/bin/staticcheck ) ./...

# bench-run times `lamina run --rm` against crun, docker and podman
# (install them first: apt-get install docker.io podman crun hyperfine).
bench-run: build
	scripts/run-latency.sh $(BIN)/lamina

# busybox-image imports busybox:latest, built from Debian's busybox-static,
# into the store (LAMINA_ROOT or /var/lib/lamina): a first image with no
# network.
busybox-image: build
	sh scripts/busybox-image.sh $(BIN)/lamina

# peer-test runs unionmount-testsuite against laminafs (about 10 minutes).
# scripts/peer-tests/umount retries a busy unmount of the layers' file
# system, which the suite does right after the union's, before a FUSE
# server has always exited (see there).
peer-test: build
	PATH=$(CURDIR)/scripts/peer-tests:$$PATH UM_STRICT_DIRRENAME=1 UNIONFS_BIN=$(BIN)/laminafs ../shared/peer-tests/unionmount.sh

clean:
	rm -rf $(BIN)
