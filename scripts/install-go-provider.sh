#!/usr/bin/env bash
# Installs the upstream Go provider (siderolabs/omni-infra-provider-proxmox) at a pinned release into
# .cache/go-bin, for the side-by-side conformance test and the benchmark. Nothing here is committed code of upstream.
#
# Exit codes: 0 installed (or already present), 77 SKIPPED (no `go`, or the module cannot be fetched), 1 other error.
# Environment: GO_PROVIDER_VERSION (default: the pinned release below), GO_PROVIDER_BIN_DIR (default .cache/go-bin).
set -euo pipefail

MODULE=github.com/siderolabs/omni-infra-provider-proxmox
PACKAGE=$MODULE/cmd/omni-infra-provider-proxmox
# Newest release we could confirm when this was pinned (pkg.go.dev lists v0.1.0, May 2026; the module proxy here
# refused to list versions). Bump deliberately; the script prints what `go list -m -versions` offers.
PINNED_VERSION=v0.1.0
VERSION=${GO_PROVIDER_VERSION:-$PINNED_VERSION}

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BIN_DIR=${GO_PROVIDER_BIN_DIR:-$ROOT/.cache/go-bin}
BIN=$BIN_DIR/omni-infra-provider-proxmox

skip() {
  echo "################################################################################" >&2
  echo "## SKIPPED: upstream Go provider not installed: $*" >&2
  echo "## The conformance diff and the upstream half of the benchmark will be skipped." >&2
  echo "################################################################################" >&2
  exit 77
}

if ! command -v go >/dev/null 2>&1; then
  skip "the Go toolchain ('go') is not on PATH (install Go >= 1.26 to enable)"
fi

mkdir -p "$BIN_DIR"
# Keep the cache out of git without touching the repository's .gitignore.
[ -f "$ROOT/.cache/.gitignore" ] || { mkdir -p "$ROOT/.cache"; printf '*\n' > "$ROOT/.cache/.gitignore"; }

if [ -x "$BIN" ] && [ "$(cat "$BIN.version" 2>/dev/null || true)" = "$VERSION" ]; then
  echo "go provider $VERSION already installed: $BIN"
  exit 0
fi

if versions=$(go list -m -versions "$MODULE" 2>/dev/null); then
  newest=${versions##* }
  echo "released versions of $MODULE: ${versions#"$MODULE"}"
  if [ "$newest" != "$MODULE" ] && [ "$newest" != "$VERSION" ]; then
    echo "note: newest release is $newest, installing the pinned $VERSION (set GO_PROVIDER_VERSION to override)" >&2
  fi
else
  echo "warning: 'go list -m -versions $MODULE' failed (module proxy unreachable or refusing); trying the install anyway" >&2
fi

echo "installing $PACKAGE@$VERSION into $BIN_DIR"
if ! GOBIN=$BIN_DIR GOFLAGS=-buildvcs=false go install "$PACKAGE@$VERSION"; then
  if [ -x "$BIN" ]; then
    echo "WARNING: 'go install $PACKAGE@$VERSION' failed; keeping the binary already at $BIN ($(cat "$BIN.version" 2>/dev/null || echo 'unknown version'))" >&2
    exit 0
  fi
  skip "'go install $PACKAGE@$VERSION' failed (see above; GOPROXY=$(go env GOPROXY))"
fi
printf '%s\n' "$VERSION" > "$BIN.version"
echo "installed: $BIN ($VERSION)"
