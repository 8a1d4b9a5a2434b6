# ledge: `make run` and `make test` set up everything they need through
# `make deps` (idempotent; see deploy/deps.sh; `make run` only its
# appliance part, `make deps-run`).
SHELL   := /bin/bash
GO      ?= go
BIN     := bin/ledge
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
COMMIT  ?= $(shell git rev-parse --short HEAD 2>/dev/null || echo unknown)
LDFLAGS := -X main.version=$(VERSION) -X main.commit=$(COMMIT)
# Arguments for `make run`, e.g. make run ARGS="--dev --config deploy/examples/ledge.yaml"
ARGS    ?=
# Packages `make test` runs; the whole module by default.
PKGS    ?= ./...
# Benchmark time per benchmark for `make bench`.
BENCHTIME ?= 3s

# staticcheck at a pinned version (go run fetches it once through the
# module proxy and caches it).
STATICCHECK := honnef.co/go/tools/cmd/staticcheck@v0.8.2

# Cross builds and packages: ARCH=amd64|arm64 (default: this machine's).
ARCH    ?= $(shell dpkg --print-architecture 2>/dev/null || echo amd64)

.PHONY: all deps deps-run build run test test-unit bench bench-lean fuzz vet clean example-module cross test-arm64 dist test-dist

all: build

deps:
	@bash deploy/deps.sh

# What the appliance alone needs (no test tools): for build, run and the
# example module.
deps-run:
	@bash deploy/deps.sh run

# The first build compiles the cgo bindings of OpenCV (gocv) and SQLite,
# minutes of C++; it says so, and how long it took. go list asks with
# -trimpath, as the build is done: without it, on a machine where only
# `make run` ever built, everything looks stale and every build says "first".
COLD_PKGS := gocv.io/x/gocv github.com/mattn/go-sqlite3
build: deps-run
	@cold=$$($(GO) list -trimpath -f '{{.Stale}}' $(COLD_PKGS) 2>/dev/null | grep -c true || true); \
	if [ "$$cold" != 0 ]; then \
	  echo "build: first build of $(BIN): compiling the Go bindings of OpenCV and SQLite (C++ and C) takes about 4-8 minutes on a 2-core machine; later builds take seconds" >&2; \
	fi; \
	start=$$(date +%s); \
	echo '$(GO) build -trimpath -ldflags "$(LDFLAGS)" -o $(BIN) ./cmd/ledge'; \
	$(GO) build -trimpath -ldflags "$(LDFLAGS)" -o $(BIN) ./cmd/ledge || exit 1; \
	if [ "$$cold" != 0 ]; then echo "build: $(BIN) built in $$(( $$(date +%s) - start )) s" >&2; fi

run: build
	./$(BIN) run $(ARGS)

vet:
	$(GO) vet ./...
	$(GO) run $(STATICCHECK) ./...

# Every package under the race detector (about 9 minutes on a 2-core machine).
test: deps vet
	$(GO) test -race -count=1 -timeout 25m $(PKGS)
ifeq ($(PKGS),./...)
	@# the patched mochi-mqtt copy is its own module (hub/third_party/mochi/LEDGE.md);
	@# its upstream tests time by sleeping, so they run without -race (the hub's
	@# tests above run its code under the race detector)
	cd hub/third_party/mochi && $(GO) test -count=1 ./...
endif

# The tests that need none of Docker, mosquitto, Chromium, ONNX Runtime or
# Node (under -short, internal/testenv skips the others, and the integration
# tests that take seconds), in under a minute; appliance and cmd/ledge,
# which start whole ledges, are left to make test. Two test binaries a core:
# the hub's tests mostly wait on their hubs, while the others link.
test-unit:
	$(GO) test -short -count=1 -p $$(( 2 * $$(nproc) )) -timeout 5m $$($(GO) list ./... | grep -v -e '/appliance$$' -e '/cmd/ledge$$')

# Benchmarks print ratios against baselines measured in the same run.
# BENCH narrows them, e.g. make bench BENCH=Detect PKGS=./inference/
BENCH ?= .
bench: deps
	$(GO) test -run '^$$' -bench '$(BENCH)' -benchtime $(BENCHTIME) -count 1 -timeout 90m $(PKGS)
	@$(MAKE) --no-print-directory bench-lean

# Shared libraries, `ledge version` time and RSS of the developer and the
# packaged build, with their goals (deploy/lean.sh; the first run builds
# the minimal OpenCV, see docs/development.md).
bench-lean: deps
	@bash deploy/lean.sh

# Run every fuzz target for FUZZTIME each (ledge's and the patched mochi
# copy's MQTT packet decoders, its own module).
FUZZTIME ?= 15s
fuzz: deps
	@set -e; for mod in . hub/third_party/mochi; do \
	  for pkg in $$(cd $$mod && $(GO) list ./...); do \
	    for f in $$(cd $$mod && $(GO) test -list '^Fuzz' $$pkg 2>/dev/null | grep '^Fuzz' || true); do \
	      echo "== $$pkg $$f"; (cd $$mod && $(GO) test -run '^$$' -fuzz "^$$f\$$" -fuzztime $(FUZZTIME) $$pkg); \
	    done; \
	  done; \
	done

# The example container module (FROM scratch) that
# deploy/examples/deployment-local.yaml runs.
example-module: deps-run
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags "-s -w" -o deploy/examples/module/module ./deploy/examples/module
	@# Debian 12's docker.io has no buildx: its notice that the legacy builder is
	@# deprecated is not an error, and is left out (anything else is shown).
	@echo 'docker build -q -t ledge-example/module:1 deploy/examples/module'
	@out=$$(docker build -q -t ledge-example/module:1 deploy/examples/module 2>&1); rc=$$?; \
	  printf '%s\n' "$$out" | awk '/^DEPRECATED: The legacy builder/ {skip=1; next} skip && /^([[:space:]]|$$)/ {next} {skip=0; print}'; \
	  exit $$rc
	rm -f deploy/examples/module/module

# bin/linux-$(ARCH)/ledge, linked against a minimal OpenCV built once and
# cached (deploy/opencv.sh); what `make dist` packages. See
# docs/development.md.
cross:
	@bash deploy/cross.sh $(ARCH)

# The inference and pipeline tests and `ledge detect` as arm64 binaries
# under qemu-user-static. Slow: not part of `make test`.
test-arm64:
	@bash deploy/test-arm64.sh

# dist/ledge_<version>_$(ARCH).deb
dist:
	@bash deploy/dist.sh $(ARCH)

# Installs the $(ARCH) package into a fresh Debian 12 root of that
# architecture (debootstrap, as root, from the mirror apt uses; arm64 under
# qemu) and checks ledge version, ledge detect
# and dpkg -r there. Needs the mirror: not part of `make test`.
test-dist:
	@bash deploy/test-dist.sh $(ARCH)

clean:
	rm -rf bin dist
