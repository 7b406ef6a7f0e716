#!/usr/bin/env bash
# The demo behind `make demo`: an ext4 volume made from a small directory
# tree, snapshotted into the embedded file:// store, inspected, verified, and
# cleaned up. Run from the repository root.
set -euo pipefail
cd "$(dirname "$0")/.."
S=target/release/snapahead
DEMO=demo
step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

cleanup() {
  $S delete demo >/dev/null 2>&1 || true
  $S gc --grace 0s >/dev/null 2>&1 || true
}
trap cleanup EXIT
cleanup

step "Make a 256 MiB ext4 volume from a directory tree (mkfs.ext4 -d)"
rm -rf "$DEMO"; mkdir -p "$DEMO/tree/docs" "$DEMO/tree/bin" "$DEMO/tree/data"
cp README.md "$DEMO/tree/docs/"
cp -r src "$DEMO/tree/docs/src"
cp "$S" "$DEMO/tree/bin/snapahead"
head -c 16M /dev/urandom > "$DEMO/tree/data/random.bin"
seq 1 400000 > "$DEMO/tree/data/numbers.txt"
truncate -s 256M "$DEMO/demo.img"
mkfs.ext4 -q -F -d "$DEMO/tree" "$DEMO/demo.img"
ls -ls "$DEMO/demo.img"

step "snapahead create demo   (source and block size from snapshots.yaml)"
$S create demo

step "snapahead list"
$S list

step "snapahead inspect demo"
$S inspect demo

step "snapahead verify demo   (fetches every stored block, checks every checksum)"
$S verify demo

step "Incremental: change one file, snapshot again against the parent"
echo "changed at $(date)" > "$DEMO/tree/docs/CHANGED.txt"
cp "$DEMO/demo.img" "$DEMO/demo2.img"
debugfs -w -R "write $DEMO/tree/docs/CHANGED.txt CHANGED.txt" "$DEMO/demo2.img" >/dev/null 2>&1
$S create demo-2 --source "$DEMO/demo2.img" --parent demo
$S list
$S delete demo-2

step "Clean up (delete the snapshots, gc their objects)"
cleanup
trap - EXIT
$S list
rm -rf "$DEMO"
echo "demo done"
