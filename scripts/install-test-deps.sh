#!/usr/bin/env bash
# Installs the Debian tools the test suite uses as oracles (isoinfo from genisoimage, blkid from
# util-linux). A no-op when they are present. Needs root + apt-get when they are missing.
set -euo pipefail
need=()
command -v isoinfo >/dev/null 2>&1 || need+=(genisoimage)
command -v blkid >/dev/null 2>&1 || need+=(util-linux)
if [ ${#need[@]} -eq 0 ]; then exit 0; fi
if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null 2>&1; then
  echo "install-test-deps: missing ${need[*]} and cannot apt-get install them (need root on Debian/Ubuntu)." >&2
  echo "install-test-deps: install them yourself, e.g. 'sudo apt-get install ${need[*]}'." >&2
  exit 1
fi
echo "install-test-deps: installing ${need[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq >/dev/null
apt-get install -y -qq "${need[@]}" >/dev/null
