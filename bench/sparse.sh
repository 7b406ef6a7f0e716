#!/usr/bin/env bash
# create from a sparse source: a 200 GiB image file holding 320 MiB of
# data in 640 extents of 512 KiB at random 4 KiB-aligned offsets (as a
# mostly empty VM disk looks); page cache dropped first. Also the size of
# the release binary (issue: ≤ 25 MB).
# usage: bench/sparse.sh [--quick]
source "$(dirname "$0")/lib.sh"
D="$WORK/sparse"
cleanup() { [ -n "${KEEP:-}" ] || rm -rf "$D"; }
trap cleanup EXIT
rm -rf "$D"; mkdir -p "$D"
truncate -s 200G "$D/big.img"
python3 - "$D/big.img" <<'PY'
import random, sys
r = random.Random(5)
size = 200 << 30
with open(sys.argv[1], "r+b") as f:
    for _ in range(640):
        f.seek(r.randrange(size - (1 << 20)) // 4096 * 4096)
        f.write(r.randbytes(512 * 1024))
PY
sync; echo 3 > /proc/sys/vm/drop_caches
t=$(timeit "$S" --store "file://$D/store" create big --source "$D/big.img")
line=$("$S" --store "file://$D/store" inspect big | grep -E '^(blocks|stored)')
bin=$(stat -c %s "$S")
cat > "$RESULTS/sparse.md" <<MD
## create from a sparse source, and the binary

Command: \`bench/sparse.sh\` (part of \`make bench\`). Machine: $(machine_line).

A 200 GiB image file holding 320 MiB of data (640 extents of 512 KiB at random offsets), page cache
dropped: \`snapahead create\` into \`file://\` took **$(printf %.2f "$t") s** (target ≤ 5 s; a full read of
the holes took 185 s before \`create\` read sparse files by their data). The blocks that extents
straddle are read whole, so about twice the data is read; the holes are not read at all.

\`\`\`
$line
\`\`\`

Release binary (\`target/release/snapahead\`, no debug info): **$((bin / 1000000)) MB** (target ≤ 25 MB; 102 MB with \`debug = 1\`).
MD
cat "$RESULTS/sparse.md"
