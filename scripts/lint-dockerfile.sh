#!/usr/bin/env bash
# Lints the Dockerfile with BuildKit's own checks (the rules of `docker build --check`), offline: tools/dockerfile-lint
# is a small Go program importing github.com/moby/buildkit at the version pinned in its go.mod. Builds it into
# .tmp/bin/dockerfile-lint (the packaging test also runs it on a Dockerfile that must fail). Exit 77 without Go.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
if ! command -v go >/dev/null 2>&1; then
  echo "lint-dockerfile: 'go' is not installed: the Dockerfile is NOT linted" >&2
  exit 77
fi
mkdir -p "$root/.tmp/bin"
(cd "$root/tools/dockerfile-lint" && GOFLAGS=-mod=mod go build -trimpath -o "$root/.tmp/bin/dockerfile-lint" .)
"$root/.tmp/bin/dockerfile-lint" "$root/Dockerfile"
