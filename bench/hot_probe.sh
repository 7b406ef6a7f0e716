#!/usr/bin/env bash
# Diagnostic for the mount's hot sequential read (bench/mount.sh (a)): a
# fully cached mount vs a bindfs passthrough of the source, page cache
# dropped before every dd, alternating, RUNS times. SNAPAHEAD_BIN picks the
# binary, so two builds can be compared side by side:
#   for b in old new old new; do SNAPAHEAD_BIN=/tmp/snap-$b bench/hot_probe.sh; done
# Prints MB/s of each and the FUSE requests per GiB (kernel read size).
# PERF=1 records a profile of the mount during the hot dds to $WORK/hot-perf.data
# (build it with `cargo build --profile profiling` and set SNAPAHEAD_BIN=target/profiling/snapahead)
# (`perf report -i ... --no-children --sort symbol`).
source "$(dirname "$0")/lib.sh"

SIZE_MB=${SIZE_MB:-1024}; RUNS=${RUNS:-3}
D="$WORK/hot"; MNT="$D/mnt"; BIND="$D/bind"; PID=""
cleanup() {
  [ -n "$PID" ] && kill -TERM "$PID" 2>/dev/null && wait "$PID" 2>/dev/null
  for m in "$MNT" "$BIND"; do mountpoint -q "$m" 2>/dev/null && fusermount3 -u -z "$m"; done
  [ -n "${KEEP:-}" ] || rm -rf "$D"
}
trap cleanup EXIT
mkdir -p "$D/src" "$MNT" "$BIND"
[ -f "$D/src/vol.img" ] || prng 3 $((SIZE_MB * 1048576)) > "$D/src/vol.img"
[ -d "$D/store" ] || "$S" --store "file://$D/store" create vol --source "$D/src/vol.img" >/dev/null
"$S" --store "file://$D/store" mount "$MNT" --cache-dir "$D/cache" >"$D/mount.log" 2>&1 &
PID=$!
for _ in $(seq 1 100); do [ -e "$MNT/vol.img" ] && break; sleep 0.1; done
dd if="$MNT/vol.img" of=/dev/null bs=1M status=none; sleep 2   # fill the cache
bindfs -r --multithreaded "$D/src" "$BIND"
r0=$(stat_of reads)
PP=""
[ -n "${PERF:-}" ] && { perf record -F 1999 -g -p "$PID" -o "$WORK/hot-perf.data" 2>/dev/null & PP=$!; sleep 0.3; }
for _ in $(seq 1 "$RUNS"); do
  drop; a=$(timeit dd if="$MNT/vol.img" of=/dev/null bs=1M status=none)
  drop; b=$(timeit dd if="$BIND/vol.img" of=/dev/null bs=1M status=none)
  printf 'snapahead %4.0f MB/s   bindfs %4.0f MB/s   ratio %.2f\n' \
    "$(echo "$SIZE_MB / $a" | bc -l)" "$(echo "$SIZE_MB / $b" | bc -l)" "$(echo "$b / $a" | bc -l)"
done
[ -n "$PP" ] && { kill -INT "$PP"; wait "$PP" || true; }
echo "FUSE reads per GiB: $(( ($(stat_of reads) - r0) * 1024 / (RUNS * SIZE_MB) ))"
