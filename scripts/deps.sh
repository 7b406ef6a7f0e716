#!/usr/bin/env bash
# Installs the Debian packages snapahead's demo, tests and benchmarks use,
# only those missing. Needs root (or sudo) when something is missing.
set -euo pipefail
want=(e2fsprogs fuse3 libfuse3-dev util-linux zstd fio bindfs)
missing=()
for p in "${want[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
echo "deps.sh: installing ${missing[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -q >/dev/null
$SUDO apt-get install -y -q "${missing[@]}" >/dev/null
