#!/bin/sh
# Assembles the production layout: exactly what the container image holds in /app, and what CI and `npm test` run.
#
#   sh scripts/assemble-prod.sh OUT
#
# OUT gets package.json, package-lock.json, node_modules/ (production dependencies only, installed by `npm ci
# --omit=dev` from the committed lock file in OUT itself, so nothing from the source tree's node_modules leaks in),
# dist/ (the compiled daemon) and bin/. Run it in a source tree where `npm ci` has installed the dev dependencies (the
# TypeScript compiler). POSIX sh: the Dockerfile runs it on Alpine.
set -eu
out=${1:?usage: sh scripts/assemble-prod.sh OUT}
cd "$(dirname "$0")/.."
src=$(pwd)

rm -rf dist
npm run --silent build

rm -rf "$out"
mkdir -p "$out"
cp package.json package-lock.json "$out"/
(cd "$out" && npm ci --omit=dev --ignore-scripts --no-audit --no-fund --loglevel=error)
cp -R "$src/dist" "$src/bin" "$out"/
echo "assemble-prod: production layout in $out ($(du -sk "$out" | cut -f1) KiB)" >&2
