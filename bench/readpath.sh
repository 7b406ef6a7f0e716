#!/usr/bin/env bash
# Read-path A/B: the build before the read-path rework (OLD_BIN) against
# this one, side by side in one run, alternating, each on a file:// store it
# created itself from the same volume (an older build cannot read a newer
# index format):
#  (a) cold sequential read: fresh cache, page cache dropped, `dd bs=1M` of
#      the whole image; the mount's CPU seconds (user + system of every
#      thread, from start until its cache writer has drained) per GiB read,
#      and MB/s;
#  (b) hot `fio randread` 4 KiB QD16 O_DIRECT, IOPS and p99;
#  (c) hot `dd` MB/s against a bindfs passthrough of the source.
# The volume is half random, half repetitive text per 64 KiB (compresses
# ~2×, so blocks go through zstd as real images do).
# usage: OLD_BIN=/path/to/old/snapahead bench/readpath.sh [--quick]
source "$(dirname "$0")/lib.sh"
OLD_BIN=${OLD_BIN:-$WORK/snapahead-old}
if [ ! -x "$OLD_BIN" ]; then
  echo "readpath: SKIPPED (no OLD_BIN: build the commit to compare with and set OLD_BIN)"
  exit 0
fi
QUICK=""; [ "${1:-}" = "--quick" ] && QUICK=1
SIZE_MB=${SIZE_MB:-$([ -n "$QUICK" ] && echo 512 || echo 1024)}
RUNS=${RUNS:-$([ -n "$QUICK" ] && echo 2 || echo 3)}
FIO_SECS=${FIO_SECS:-$([ -n "$QUICK" ] && echo 5 || echo 10)}
D="$WORK/readpath"; MNT="$D/mnt"; BIND="$D/bind"; PID=""
stop_mount() {
  [ -n "$PID" ] && kill -TERM "$PID" 2>/dev/null && wait "$PID" 2>/dev/null || true
  PID=""
}
cleanup() {
  stop_mount
  for m in "$MNT" "$BIND"; do mountpoint -q "$m" 2>/dev/null && fusermount3 -u -z "$m"; done
  [ -n "${KEEP:-}" ] || rm -rf "$D"
}
trap cleanup EXIT
mkdir -p "$D/src" "$MNT" "$BIND"
python3 - "$D/src/vol.img" "$SIZE_MB" <<'PY'
import random, sys
r = random.Random(11)
text = (b"the quick brown fox jumps over the lazy dog 0123456789\n" * 700)[:32768]
with open(sys.argv[1], "wb") as f:
    for _ in range(int(sys.argv[2]) * 16):
        f.write(r.randbytes(32768)); f.write(text)
PY
"$S" --store "file://$D/store" create vol --source "$D/src/vol.img" >/dev/null
"$OLD_BIN" --store "file://$D/store-old" create vol --source "$D/src/vol.img" >/dev/null
# usage: start BIN CACHE_DIR — a mount of BIN's store on $MNT, $PID set
start() {
  local store="$D/store"; [ "$1" = "$OLD_BIN" ] && store="$D/store-old"
  "$1" --store "file://$store" mount "$MNT" --cache-dir "$2" --no-prefetch >"$D/mount.log" 2>&1 &
  PID=$!
  for _ in $(seq 1 100); do [ -e "$MNT/vol.img" ] && return; sleep 0.1; done
  echo "readpath: the mount did not come up"; cat "$D/mount.log"; exit 1
}
# Waits (at most 30 s) until the disk cache stops growing: its writer is done.
settle() {
  local last=-1 now same=0
  for _ in $(seq 1 100); do
    now=$("$S" stats "$MNT" --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["metrics"]["cache"]["disk_entries"])')
    if [ "$now" = "$last" ]; then same=$((same + 1)); [ $same -ge 3 ] && return; else same=0; fi
    last=$now; sleep 0.3
  done
}
declare -A cpu mbs iops p99 hot
for r in $(seq 1 "$RUNS"); do
  for b in old new; do
    bin=$OLD_BIN; [ $b = new ] && bin=$S
    rm -rf "$D/cache"; drop
    start "$bin" "$D/cache"
    c0=$(cpu_seconds "$PID")
    t=$(timeit dd if="$MNT/vol.img" of=/dev/null bs=1M status=none)
    settle
    c1=$(cpu_seconds "$PID")
    cpu[$b]+="$(echo "($c1 - $c0) * 1024 / $SIZE_MB" | bc -l) "
    mbs[$b]+="$(echo "$SIZE_MB / $t" | bc -l) "
    read -r i p <<<"$(fio_iops "$MNT/vol.img")"
    iops[$b]+="$i "; p99[$b]+="$p "
    drop; hot[$b]+="$(echo "$SIZE_MB / $(timeit dd if="$MNT/vol.img" of=/dev/null bs=1M status=none)" | bc -l) "
    stop_mount
  done
done
bindfs -r --multithreaded "$D/src" "$BIND"
bind=()
for _ in $(seq 1 "$RUNS"); do drop; bind+=("$(echo "$SIZE_MB / $(timeit dd if="$BIND/vol.img" of=/dev/null bs=1M status=none)" | bc -l)"); done
fusermount3 -u "$BIND"
m() { median $1; }
co=$(m "${cpu[old]}"); cn=$(m "${cpu[new]}")
io=$(m "${iops[old]}"); in=$(m "${iops[new]}")
ho=$(m "${hot[old]}"); hn=$(m "${hot[new]}"); hb=$(median "${bind[@]}")
{
  echo "## Read path: previous build vs this one"
  echo
  echo "\`OLD_BIN=... bench/readpath.sh${QUICK:+ --quick}\` — $(machine_line). ${SIZE_MB} MiB volume (compresses ~2×) in a file:// store per build (each created by its build), prefetch off, medians of $RUNS alternating runs per build; old = \`$($OLD_BIN --version)\` built from ${OLD_DESC:-the commit before the read-path rework}."
  echo
  echo "| | old | new | new / old | target |"
  echo "| --- | --- | --- | --- | --- |"
  printf '| (a) cold `dd`: mount CPU seconds per GiB | %.2f | %.2f | %.2f× | ≤ 0.70× |\n' "$co" "$cn" "$(echo "$cn / $co" | bc -l)"
  printf '| (a) cold `dd` MB/s | %.0f | %.0f | %.2f× | |\n' "$(m "${mbs[old]}")" "$(m "${mbs[new]}")" "$(echo "$(m "${mbs[new]}") / $(m "${mbs[old]}")" | bc -l)"
  printf '| (b) hot `fio randread` 4 KiB QD16 IOPS (p99 ms) | %.0f (%.2f) | %.0f (%.2f) | %.2f× | ≥ 1.20× |\n' "$io" "$(m "${p99[old]}")" "$in" "$(m "${p99[new]}")" "$(echo "$in / $io" | bc -l)"
  printf '| (c) hot `dd` MB/s (bindfs %.0f) | %.0f (%.2f× bindfs) | %.0f (%.2f× bindfs) | %.2f× | new ≥ 0.95× bindfs |\n' "$hb" "$ho" "$(echo "$ho / $hb" | bc -l)" "$hn" "$(echo "$hn / $hb" | bc -l)" "$(echo "$hn / $ho" | bc -l)"
  echo
  r2() { for x in $1; do printf '%.2f ' "$x"; done; }
  r0() { for x in $1; do printf '%.0f ' "$x"; done; }
  echo "Per run (old | new): CPU s/GiB $(r2 "${cpu[old]}")| $(r2 "${cpu[new]}"); IOPS $(r0 "${iops[old]}")| $(r0 "${iops[new]}"); hot MB/s $(r0 "${hot[old]}")| $(r0 "${hot[new]}")."
} | tee "$RESULTS/readpath.md"
