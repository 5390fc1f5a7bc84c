# cowork build. Works with GNU make on Linux and the make that ships with macOS.

GO        ?= go
VERSION   ?= $(shell git describe --tags --exact-match 2>/dev/null || echo 0.1.0-dev)
COMMIT    ?= $(shell git rev-parse --short=12 HEAD 2>/dev/null || echo unknown)
PKG       := github.com/coworkhq/cowork
LDFLAGS   := -s -w -X $(PKG)/internal/buildinfo.Version=$(VERSION) -X $(PKG)/internal/buildinfo.Commit=$(COMMIT)
# The same source builds the same binaries wherever it is built: no paths,
# and no VCS stamp (the commit is in buildinfo; Go would stamp it or not as
# the user's GOFLAGS and git say). The test guest is cached by its agent's
# digest, so a clone of the same commit reuses it.
BUILDFLAGS := -trimpath -buildvcs=false
AGENTS    := bin/cowork-agent-linux-arm64 bin/cowork-agent-linux-amd64
EMBED_DIR := image/agentbin/files
GOFILES   := $(shell find . -name '*.go' -not -path './.git/*')

E2E_ARCH  ?= arm64
UNAME     := $(shell uname -s)

.PHONY: all install agents embed-agents claude-flags test lint bench clean deps e2e e2e-image sign mac-smoke check-darwin fuzz kubevirt

all: bin/cowork bin/cowork-hostd

# The agents are static Linux binaries for the guest, whatever the host is.
bin/cowork-agent-linux-%: $(GOFILES) go.mod go.sum
	CGO_ENABLED=0 GOOS=linux GOARCH=$* $(GO) build $(BUILDFLAGS) -ldflags '$(LDFLAGS)' -o $@ ./cmd/cowork-agent

agents: $(AGENTS)

# bin/cowork-hostd carries both agents (go:embed) so it can install them into a
# guest, with their digests computed here rather than at every `cowork version`.
embed-agents: $(EMBED_DIR)/SHA256SUMS

$(EMBED_DIR)/SHA256SUMS: $(AGENTS)
	cp $(AGENTS) $(EMBED_DIR)/
	cd $(EMBED_DIR) && { sha256sum cowork-agent-* 2>/dev/null || shasum -a 256 cowork-agent-*; } > SHA256SUMS

# Two binaries from one build: cowork, the CLI (a thin client, plain Go on
# every OS), and cowork-hostd, the per-instance daemon that `cowork start`
# launches from beside it. bin/cowork is no use without its daemon, so
# making one makes both.
bin/cowork: bin/cowork-hostd $(GOFILES) go.mod go.sum
	CGO_ENABLED=0 $(GO) build $(BUILDFLAGS) -ldflags '$(LDFLAGS)' -o $@ ./cmd/cowork

# On macOS the daemon needs cgo (vz) and the virtualization entitlement, since
# it is the process that creates the VM: make signs it ad hoc, which is enough
# to run it on the Mac that built it. cgo is asked for explicitly there:
# without a C compiler Go would quietly turn it off and vz would fail with a
# screen of undefined names, so a missing clang fails in cgo's own words, and
# CGO_ENABLED=0 is refused.
bin/cowork-hostd: $(EMBED_DIR)/SHA256SUMS $(GOFILES) go.mod go.sum
ifeq ($(UNAME),Darwin)
	@if [ "$(CGO_ENABLED)" = 0 ]; then echo 'CGO_ENABLED=0: on macOS cowork-hostd needs cgo for Virtualization.framework; unset CGO_ENABLED (and install the Xcode command line tools: xcode-select --install)' >&2; exit 2; fi
	CGO_ENABLED=1 $(GO) build $(BUILDFLAGS) -ldflags '$(LDFLAGS)' -o $@ ./cmd/cowork-hostd
	codesign --force --entitlements entitlements.plist -s - $@
else
	$(GO) build $(BUILDFLAGS) -ldflags '$(LDFLAGS)' -o $@ ./cmd/cowork-hostd
endif

# The daemon of instances on a Kubernetes cluster (cowork init --backend
# kubevirt): the kubevirt module, so that Kubernetes' client libraries stay
# out of the other two binaries. Install it beside them.
kubevirt: bin/cowork-hostd-kubevirt

bin/cowork-hostd-kubevirt: $(EMBED_DIR)/SHA256SUMS $(GOFILES) go.mod go.sum kubevirt/go.mod kubevirt/go.sum
	CGO_ENABLED=0 $(GO) -C kubevirt build $(BUILDFLAGS) -ldflags '$(LDFLAGS)' -o ../$@ ./cmd/cowork-hostd-kubevirt

# Installs (or upgrades) the pair side by side: make install PREFIX=~/.local.
# cowork finds cowork-hostd next to itself, so always install both together.
PREFIX ?= /usr/local
install: bin/cowork bin/cowork-hostd
	mkdir -p $(DESTDIR)$(PREFIX)/bin
	install -m 0755 bin/cowork-hostd $(DESTDIR)$(PREFIX)/bin/cowork-hostd.new
	install -m 0755 bin/cowork $(DESTDIR)$(PREFIX)/bin/cowork.new
	mv -f $(DESTDIR)$(PREFIX)/bin/cowork-hostd.new $(DESTDIR)$(PREFIX)/bin/cowork-hostd
	mv -f $(DESTDIR)$(PREFIX)/bin/cowork.new $(DESTDIR)$(PREFIX)/bin/cowork

# Signs both binaries with a Developer ID for other Macs (the daemon with the
# entitlement): make sign IDENTITY="Developer ID Application: Name (TEAMID)".
sign: bin/cowork bin/cowork-hostd
	@test -n "$(IDENTITY)" || { echo 'usage: make sign IDENTITY="Developer ID Application: ..."'; exit 2; }
	codesign --force --options runtime --timestamp --entitlements entitlements.plist -s "$(IDENTITY)" bin/cowork-hostd
	codesign --force --options runtime --timestamp -s "$(IDENTITY)" bin/cowork
	codesign --verify --strict --verbose=2 bin/cowork-hostd bin/cowork

# Runs every fuzz target for FUZZTIME (default 10m) and keeps the corpus in testdata.
fuzz:
	./hack/fuzz.sh

# On a Mac: boots a real guest under vz and prints PASS, FAIL or SKIP per
# check, then a summary; leaves nothing running.
mac-smoke:
	./hack/mac-smoke.sh

# The one test command (README): unit and integration tests, no VM.
test: embed-agents
	GO=$(GO) ./hack/test.sh

# The end-to-end tests: real guests under QEMU (needs root; installs QEMU,
# debootstrap and the rest from apt; the guest is cached in ~/.cache/cowork-e2e).
e2e: bin/cowork
	E2E_ARCH=$(E2E_ARCH) ./hack/e2e.sh

# Builds the e2e test guest and prints kernel=, initrd=, disk=, cmdline=.
e2e-image: agents
	E2E_ARCH=$(E2E_ARCH) ./hack/e2e-image.sh bin/cowork-agent-linux-$(E2E_ARCH)

# go vet, gofmt, staticcheck (pinned by tools/lint/go.mod; for linux and
# darwin), actionlint over .github/workflows (pinned there too), no tracked
# file over 1 MiB (build output stays out), and no Markdown link to a file
# the checkout lacks.
lint:
	$(GO) vet ./...
	$(GO) vet -tags e2e ./e2e/
	$(GO) -C kubevirt vet ./...
	GO=$(GO) ./hack/staticcheck.sh
	GO=$(GO) ./hack/actionlint.sh
	@out=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')); \
	if [ -n "$$out" ]; then echo "gofmt would change:"; echo "$$out"; exit 1; fi
	./hack/check-large-files.sh
	./hack/check-links.sh

deps:
	./hack/deps.sh

# Regenerates Claude Code's option table from the pinned version's --help.
claude-flags:
	$(GO) run ./hostd/claudecode/gen "$$(./hack/claude.sh)" hostd/claudecode/flags_gen.go

# Proves on Linux that the macOS code vets and builds for darwin/arm64
# against the exact API of the pinned vz (a generated stub, tools/vzstub).
check-darwin:
	GO=$(GO) ./hack/check-darwin.sh

# Prints the benchmark table (installs openssh-server for the ssh peer; as root
# it also boots the e2e guest). Arguments: make bench BENCH_ARGS="-rounds 50",
# or one section: make bench BENCH_ARGS="-only network".
bench: bin/cowork
	./hack/bench.sh $(BENCH_ARGS)

clean:
	rm -rf bin $(EMBED_DIR)/cowork-agent-* $(EMBED_DIR)/SHA256SUMS
