#!/usr/bin/env bash
# Where a trained container start's time goes, phase by phase, against the
# same start from local disk (the "container, 512KiB" row of coldstart.sh):
#   mount   launching `snapahead mount` until the image appears (process
#           start, the index's GET, the cache opened, the FUSE mount)
#   loop    `mount -o loop` of the image (ext4's first, dependent reads)
#   work    the container workload of coldstart.sh in a chroot
#   umount  the loop unmount
# Side by side, alternating, page cache dropped before each start; medians.
# Needs the images and stores of a kept coldstart run:
#   KEEP=1 bench/coldstart.sh --quick && bench/coldstart_phases.sh
# usage: bench/coldstart_phases.sh   (env: RUNS, default 5; B_STORE=DIR adds
#   a column for another store of the same image, e.g. one whose index was
#   learned by another build, started alternately with the first;
#   B_BIN=PATH runs that column with another binary)
source "$(dirname "$0")/lib.sh"
RUNS=${RUNS:-5}
D="$WORK/coldstart"; MNT="$D/mnt"; LO="$D/lo"; STORE="${STORE:-$D/new-container-512KiB}"
if [ ! -d "$STORE" ] || [ ! -f "$D/container.img" ]; then
  echo "coldstart_phases: SKIPPED (run KEEP=1 bench/coldstart.sh --quick first)"; exit 0
fi
PID=""
trap '[ -n "$PID" ] && kill -TERM "$PID" 2>/dev/null; mountpoint -q "$LO" && umount "$LO"; mountpoint -q "$MNT" && fusermount3 -u -z "$MNT"' EXIT
now() { date +%s.%N; }
sub() { echo "$1 - $2" | bc -l; }
# usage: phases IMAGE — loop mount, work, unmount; appends to the arrays of $1's kind
phases() { # kind image
  local t1 t2 t3 t4
  t1=$(now); mount -o loop,ro,noload "$2" "$LO"; t2=$(now)
  wl_container "$LO" > /dev/null; t3=$(now); umount "$LO"; t4=$(now)
  eval "${1}_loop+=($(sub "$t2" "$t1")) ${1}_work+=($(sub "$t3" "$t2")) ${1}_um+=($(sub "$t4" "$t3"))"
}
# usage: snap_phases KIND BIN STORE — a fresh mount's start, then phases
snap_phases() {
  rm -rf "$D/c"; drop
  local t0; t0=$(now)
  "$2" --store "file://$3" mount "$MNT" --cache-dir "$D/c" --inject-latency 20ms >"$D/phases.log" 2>&1 &
  PID=$!
  for _ in $(seq 1 5000); do [ -n "$(ls "$MNT" 2>/dev/null)" ] && break; sleep 0.002; done
  eval "${1}_mount+=($(sub "$(now)" "$t0"))"
  phases "$1" "$MNT/container.img"
  kill -TERM "$PID"; wait "$PID" || true; PID=""
}
local_loop=(); local_work=(); local_um=(); snap_mount=(); snap_loop=(); snap_work=(); snap_um=()
b_mount=(); b_loop=(); b_work=(); b_um=()
for _ in $(seq 1 "$RUNS"); do
  drop; phases local "$D/container.img"
  snap_phases snap "$S" "$STORE"
  [ -n "${B_STORE:-}" ] && snap_phases b "${B_BIN:-$S}" "$B_STORE"
done
f() { printf %.3f "$(median "$@")"; }
lt=$(echo "$(median "${local_loop[@]}") + $(median "${local_work[@]}") + $(median "${local_um[@]}")" | bc -l)
st=$(echo "$(median "${snap_mount[@]}") + $(median "${snap_loop[@]}") + $(median "${snap_work[@]}") + $(median "${snap_um[@]}")" | bc -l)
bcol() { [ -n "${B_STORE:-}" ] && echo " $(f "$@") |"; }
[ -n "${B_STORE:-}" ] && bt=$(echo "$(median "${b_mount[@]}") + $(median "${b_loop[@]}") + $(median "${b_work[@]}") + $(median "${b_um[@]}")" | bc -l)
cat <<MD
\`bench/coldstart_phases.sh\` (RUNS=$RUNS, medians, seconds) — $(machine_line).

| phase | local disk | snapahead, trained, 20 ms per GET ($STORE) |$([ -n "${B_STORE:-}" ] && echo " B: ${B_BIN:-$S}, $B_STORE |")
| --- | --- | --- |$([ -n "${B_STORE:-}" ] && echo " --- |")
| mount (launch → image visible) | – | $(f "${snap_mount[@]}") |$(bcol "${b_mount[@]}")
| loop mount | $(f "${local_loop[@]}") | $(f "${snap_loop[@]}") |$(bcol "${b_loop[@]}")
| work | $(f "${local_work[@]}") | $(f "${snap_work[@]}") |$(bcol "${b_work[@]}")
| loop unmount | $(f "${local_um[@]}") | $(f "${snap_um[@]}") |$(bcol "${b_um[@]}")
| sum of medians | $(printf %.3f "$lt") | $(printf %.3f "$st") |$([ -n "${B_STORE:-}" ] && echo " $(printf %.3f "$bt") |")
MD
