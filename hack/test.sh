#!/bin/sh
# make test: unit and integration tests, no VM. On Debian-like machines it
# installs the tools the tests compare against or run in (qemu-img, cloud-init's
# schema check, headless Chromium for the dashboard's page) and requires them;
# elsewhere those tests skip.
set -eu
cd "$(dirname "$0")/.."
if command -v apt-get >/dev/null 2>&1; then
	./hack/deps.sh qemu-utils chromium
	COWORK_CLOUD_INIT=$(./hack/cloud-init.sh)
	COWORK_CLAUDE=$(./hack/claude.sh)
	export COWORK_CLOUD_INIT COWORK_CLAUDE COWORK_TEST_REQUIRE_TOOLS=1
fi
export COWORK_TEST_REQUIRE_AGENTS=1
${GO:-go} test -count=1 -timeout 15m "$@" ./...
# The KubeVirt backend is a module of its own (its Kubernetes libraries
# stay out of cowork's): its tests run against a fake API server.
exec ${GO:-go} -C kubevirt test -count=1 -timeout 5m "$@" ./...
