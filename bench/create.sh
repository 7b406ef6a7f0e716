#!/usr/bin/env bash
# Benchmark of `snapahead create` (issue: foundation):
#  1. throughput of create into file:// vs `zstd -1 -T0` compressing the same
#     image to a file on the same disk, side by side in one run;
#  2. incremental create with 1% of blocks changed: bytes uploaded.
# Image: half random, a quarter zeros, a quarter one repeated 1 MiB chunk.
# usage: bench/create.sh [--quick]   (quick: 512 MiB instead of 2 GiB)
source "$(dirname "$0")/lib.sh"
SIZE_MB=2048; RUNS=3
[ "${1:-}" = "--quick" ] && SIZE_MB=512
D="$WORK/create"; rm -rf "$D"; mkdir -p "$D"
trap 'rm -rf "$D"' EXIT
IMG="$D/vol.img"
q=$((SIZE_MB / 4))
echo "create.sh: making a ${SIZE_MB} MiB image" >&2
{
  prng 1 $((2 * q * 1048576))
  head -c $((q * 1048576)) /dev/zero
  chunk=$(mktemp); prng 2 1048576 > "$chunk"
  for _ in $(seq 1 $q); do cat "$chunk"; done; rm -f "$chunk"
} > "$IMG"
cat "$IMG" > /dev/null   # both tools read from the page cache

zs=(); ss=()
for r in $(seq 1 $RUNS); do
  rm -f "$D/out.zst"
  zs+=("$(timeit zstd -1 -T0 -q -f "$IMG" -o "$D/out.zst")")
  rm -rf "$D/store"
  ss+=("$(timeit "$S" --store "file://$D/store" create bench --source "$IMG")")
  echo "create.sh: run $r: zstd ${zs[-1]}s, snapahead ${ss[-1]}s" >&2
done
zmed=$(median "${zs[@]}"); smed=$(median "${ss[@]}")
zstd_size=$(stat -c %s "$D/out.zst")
store_size=$(du -sb "$D/store" | cut -f1)
zt=$(echo "$SIZE_MB / $zmed" | bc -l); st=$(echo "$SIZE_MB / $smed" | bc -l)
ratio=$(echo "$st / $zt" | bc -l)

# Incremental: flip one byte in 1% of the blocks (in the random half).
blocks=$((SIZE_MB * 2)); changed=$((blocks / 100))
for i in $(seq 0 $((changed - 1))); do
  b=$(( (i * 7919) % (blocks / 2) ))
  printf '\xff' | dd of="$IMG" bs=1 seek=$((b * 524288 + 100)) conv=notrunc status=none
done
json=$("$S" --store "file://$D/store" create bench-2 --source "$IMG" --parent bench --json)
up=$(echo "$json" | python3 -c 'import json,sys; print(json.load(sys.stdin)["uploaded_bytes"])')
vol=$((SIZE_MB * 1048576))
pct=$(echo "100 * $up / $vol" | bc -l)

cat > "$RESULTS/create.md" <<MD
## create

Command: \`bench/create.sh$( [ "${1:-}" = "--quick" ] && echo " --quick")\` (part of \`make bench\`). Machine: $(machine_line).

Image: ${SIZE_MB} MiB — half random, a quarter zeros, a quarter one 1 MiB chunk repeated;
read from the page cache by both tools. Median of $RUNS runs, measured side by side in one run.

| tool | median time | throughput | output size |
| --- | --- | --- | --- |
| \`zstd -1 -T0 img -o img.zst\` | $(printf %.2f "$zmed") s | $(printf %.0f "$zt") MiB/s | $((zstd_size / 1048576)) MiB |
| \`snapahead create\` into \`file://\` | $(printf %.2f "$smed") s | $(printf %.0f "$st") MiB/s | $((store_size / 1048576)) MiB |

**snapahead / zstd throughput: $(printf %.2f "$ratio")×** (target ≥ 0.7×). snapahead stores the
repeated quarter once and the zeros not at all; zstd's stream compresses them instead.

Incremental create with 1% of the blocks changed ($changed of $blocks blocks of 512 KiB):
**uploaded $((up / 1024)) KiB = $(printf %.3f "$pct")% of the volume** (target ≤ 1.5%; data objects, pages and index).
MD
cat "$RESULTS/create.md"
