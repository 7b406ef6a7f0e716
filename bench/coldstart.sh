#!/usr/bin/env bash
# Trained cold starts against local disk (issue: hints that generalize):
#   program    python importing a fixed set of packages from a library tree
#   container  a container start from a Debian root image (debootstrap
#              minbase): chroot into it and run what an entrypoint would
#              (the shell, dpkg's database, apt's configuration, perl with
#              modules perl-base holds: minbase has no perl-modules, and
#              File::Find, asked for until 2026-12-04, failed at once)
# Each on its own ext4 image; hints learned from two sessions recorded with
# `mount --record-traces`; then, side by side per run: the image on local
# disk (loop-mounted directly, page cache dropped), snapahead with a fresh
# cache (20 ms added to every GET of a file:// store), and the same with
# the build before this wave's index (SNAPAHEAD_OLD_BIN, if given: its own
# store, learned by itself).
# usage: bench/coldstart.sh [--quick]   (env: RUNS, SNAPAHEAD_OLD_BIN)
source "$(dirname "$0")/lib.sh"
RUNS=${RUNS:-3}; [ "${1:-}" = "--quick" ] && RUNS=${RUNS_QUICK:-1}
OLD=${SNAPAHEAD_OLD_BIN:-}
D="$WORK/coldstart"; MNT="$D/mnt"; LO="$D/lo"; PID=""
LAT=20ms
trap '[ -n "${KEEP:-}" ] || mount_cleanup' EXIT
mount_cleanup; mkdir -p "$D" "$MNT" "$LO"
command -v debootstrap >/dev/null || DEBIAN_FRONTEND=noninteractive apt-get install -y -q debootstrap >/dev/null
f2() { printf %.2f "$1"; }

echo "coldstart.sh: building the images" >&2
mkdir -p "$D/tree"; tree_pylib "$D/tree"
truncate -s 512M "$D/program.img"; mkfs.ext4 -q -F -d "$D/tree" "$D/program.img"; rm -rf "$D/tree"
ROOTFS=${DEBOOTSTRAP_CACHE:-$WORK/debootstrap-bookworm}
if [ ! -x "$ROOTFS/bin/bash" ]; then
  rm -rf "$ROOTFS"
  debootstrap --variant=minbase bookworm "$ROOTFS" http://deb.debian.org/debian >/dev/null
fi
truncate -s 1G "$D/container.img"; mkfs.ext4 -q -F -d "$ROOTFS" "$D/container.img"

start_mount() { # bin store cache [flags...]
  local bin=$1 store=$2 cache=$3; shift 3
  "$bin" --store "file://$store" mount "$MNT" --cache-dir "$cache" --inject-latency $LAT "$@" >"$D/mount.log" 2>&1 &
  PID=$!
  for _ in $(seq 1 2000); do [ -n "$(ls "$MNT" 2>/dev/null)" ] && return; sleep 0.005; done
  cat "$D/mount.log"; exit 1
}
stop_mount() { kill -TERM "$PID"; wait "$PID" || true; PID=""; }
# One start: loop mount, workload, loop unmount. Sets TL, the loop mount's
# seconds (ext4's dependent metadata reads: what waits on the link first).
start_on() { # image workload
  local t0; t0=$(date +%s.%N)
  mount -o loop,ro,noload "$1" "$LO"; TL=$(echo "$(date +%s.%N) - $t0" | bc -l)
  "wl_$2" "$LO" > /dev/null; umount "$LO"
}
# A start from the image on local disk. Sets T and TL.
local_start() { # workload
  local t0; drop; t0=$(date +%s.%N); start_on "$D/$1.img" "$1"
  T=$(echo "$(date +%s.%N) - $t0" | bc -l)
}
# Seconds from launching the mount to the loop unmount (what a user waits
# for): fresh cache, prefetch on. Sets T, TL and PF (prefetched / of those read).
snap_start() { # bin store workload [mount flags]
  local bin=$1 store=$2 w=$3 t0 j; shift 3
  rm -rf "$D/c"; drop; t0=$(date +%s.%N)
  start_mount "$bin" "$store" "$D/c" "$@"; start_on "$MNT/$w.img" "$w"
  T=$(echo "$(date +%s.%N) - $t0" | bc -l)
  j=$("$bin" stats "$MNT" --json || true)
  PF=$(echo "$j" | python3 -c 'import json,sys; m=json.load(sys.stdin)["metrics"]; print(m["prefetch_completed"], "/", m["prefetch_used"])' 2>/dev/null || echo "?")
  stop_mount
}

rows=""
# start:block size. The container also at 128 KiB blocks: is its time the
# bytes of 512 KiB blocks, fetched and decoded, or something else?
for spec in program:512KiB container:512KiB container:128KiB; do
  w=${spec%%:*}; bs=${spec#*:}
  builds="new"; [ -n "$OLD" ] && builds="new old"
  for b in $builds; do
    bin=$S; [ $b = old ] && bin=$OLD
    "$bin" --store "file://$D/$b-$w-$bs" create "$w" --source "$D/$w.img" --block-size "$bs" >/dev/null
    for i in 1 2; do snap_start "$bin" "$D/$b-$w-$bs" "$w" --record-traces; done
    "$bin" --store "file://$D/$b-$w-$bs" hints "$w" --from-store >/dev/null
  done
  local_t=(); local_l=(); new_t=(); new_l=(); old_t=(); old_l=()
  for r in $(seq 1 "$RUNS"); do
    local_start "$w"; local_t+=("$T"); local_l+=("$TL")
    snap_start "$S" "$D/new-$w-$bs" "$w"; new_t+=("$T"); new_l+=("$TL"); new_pf=$PF
    if [ -n "$OLD" ]; then snap_start "$OLD" "$D/old-$w-$bs" "$w"; old_t+=("$T"); old_l+=("$TL"); fi
  done
  l=$(median "${local_t[@]}"); n=$(median "${new_t[@]}")
  if [ -n "$OLD" ]; then
    o=$(median "${old_t[@]}"); old_cells="$(f2 "$o") s ($(f2 "$(median "${old_l[@]}")") s) | $(f2 "$(echo "$o / $l" | bc -l)")"
  else old_cells="– | –"; fi
  rows+="| $w, $bs blocks | $(f2 "$l") s ($(f2 "$(median "${local_l[@]}")") s) | $(f2 "$n") s ($(f2 "$(median "${new_l[@]}")") s) | $(f2 "$(echo "$n / $l" | bc -l)") | $new_pf | $old_cells |"$'\n'
  echo "coldstart.sh: $w at $bs done" >&2
done

cat > "$RESULTS/coldstart.md" <<MD
## coldstart (trained cold starts against local disk)

Command: \`bench/coldstart.sh\` (part of \`make bench\`; \`SNAPAHEAD_OLD_BIN=path\` adds the build
before${OLD:+: here $OLD, ${OLD_DESC:-a build of an earlier commit}}). Machine: $(machine_line).
Each start on its own ext4 image: **program** python importing a dozen stdlib packages from a library
tree; **container** a chroot into a Debian bookworm minbase root (debootstrap) running the shell,
\`dpkg -L\` of every package, \`apt-config dump\`, \`apt-cache policy\`, perl loading File::Temp, Getopt::Long and POSIX,
\`ls -R\` of the zoneinfo tree and the \`/etc/*.conf\` files. Hints learned from two sessions recorded with
\`mount --record-traces\`; each run (median of $RUNS, side by side), page cache dropped: local disk =
the image file loop-mounted directly, timed from the loop mount to its unmount; snapahead = fresh
cache, a \`file://\` store with 20 ms added to every GET (\`mount --inject-latency 20ms\`), timed from
launching the mount (its start included) to the loop unmount. In brackets: the loop mount alone.
"prefetched / read": blocks this build prefetched in its last run, and how many of them were read.

| start | local disk (loop mount) | snapahead (loop mount) | / local (target ≤ 1.5) | prefetched / read | build before (loop mount) | / local |
| --- | --- | --- | --- | --- | --- | --- |
$rows
MD
cat "$RESULTS/coldstart.md"
