#!/usr/bin/env bash
# The demo behind `make demo`: an ext4 volume made from a small directory
# tree, snapshotted into the embedded file:// store, inspected, verified, and
# cleaned up. Run from the repository root.
set -euo pipefail
cd "$(dirname "$0")/.."
S=target/release/snapahead
DEMO=demo
step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

MNT="$DEMO/mnt"; LO="$DEMO/lo"; MOUNT_PID=""
cleanup() {
  mountpoint -q "$LO" 2>/dev/null && umount "$LO"
  if [ -n "$MOUNT_PID" ] && kill -0 "$MOUNT_PID" 2>/dev/null; then
    kill -TERM "$MOUNT_PID"; wait "$MOUNT_PID" 2>/dev/null || true
  fi
  mountpoint -q "$MNT" 2>/dev/null && fusermount3 -u -z "$MNT"
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

step "snapahead mount $MNT   (foreground process; here in the background)"
mkdir -p "$MNT" "$LO"
rm -rf .snapahead/cache   # start cold, to show lazy fetching
RUST_LOG=warn,fuser::mnt=error $S mount "$MNT" &
MOUNT_PID=$!
for _ in $(seq 1 100); do [ -e "$MNT/demo.img" ] && break; sleep 0.1; done
ls -ls "$MNT"

step "mount -o loop,ro $MNT/demo.img $LO   (nothing downloaded yet but the index)"
mount -o loop,ro "$MNT/demo.img" "$LO"
find "$LO" -maxdepth 2 | head -20
echo "..."
echo "numbers.txt: $(wc -l < "$LO/data/numbers.txt") lines, last: $(tail -1 "$LO/data/numbers.txt")"
echo "README.md through the snapshot:"; head -3 "$LO/docs/README.md"
diff -r --exclude=lost+found "$DEMO/tree" "$LO" && echo "diff -r tree vs loop-mounted snapshot: identical"

step "snapahead stats $MNT"
$S stats "$MNT"

step "Unmount (umount the loop device, SIGTERM the mount)"
umount "$LO"
kill -TERM "$MOUNT_PID"; wait "$MOUNT_PID"; MOUNT_PID=""
mountpoint -q "$MNT" && echo "still mounted?!" || echo "$MNT unmounted cleanly"

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
