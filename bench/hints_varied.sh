#!/usr/bin/env bash
# Do hints generalize? (issue: hints that generalize.) Families of related
# sessions on one 1 GiB ext4 image, each session recorded through
# `snapahead monitor` (fresh read-only loop mount, caches dropped):
#   python  a program start: a fixed core of packages plus 2 of 6 extras,
#           a different pair per variant
#   sqlite  queries on one database, new predicates (ids, ranges) per variant
#   tree    grep -r over 6 of 30 directories, a different choice per variant
#   random  300 random 4 KiB reads of one large file, new offsets per variant
# Hints are learned from some variants and replayed (`hints --evaluate`,
# threshold 0.5, window 2 s) on variants never seen: per family alone, all
# three first families on one snapshot (mixed), a family never trained on,
# with and without warm-up, the version-2 model (`hints --flat`) against the
# new one, and the history length of contexts.
# usage: bench/hints_varied.sh [--quick]
source "$(dirname "$0")/lib.sh"
D="$WORK/hints_varied"; MON="$D/mon"; LO="$D/lo"; PID=""
trap '[ -n "${KEEP:-}" ] || mount_cleanup' EXIT
mount_cleanup; mkdir -p "$D/tree" "$MON" "$LO"
QUICK=0; [ "${1:-}" = "--quick" ] && QUICK=1

echo "hints_varied.sh: building the image" >&2
tree_files "$D/tree" 1500
PYLIB=$(python3 -c 'import sysconfig; print(sysconfig.get_paths()["stdlib"])')
mkdir -p "$D/tree/lib"
CORE="json email http xml asyncio urllib logging collections"
EXTRA="unittest html importlib concurrent multiprocessing xmlrpc"
# What each extra imports (deeper than the package's __init__).
EXTRA_MODS="unittest.mock html.parser importlib.metadata concurrent.futures.thread multiprocessing.pool xmlrpc.server"
for p in $CORE $EXTRA; do cp -r "$PYLIB/$p" "$D/tree/lib/"; done
find "$D/tree/lib" -name __pycache__ -prune -exec rm -rf {} +
python3 -m compileall -q "$D/tree/lib" > /dev/null
make_db "$D/tree/db.sqlite"
prng 77 $((256 << 20)) > "$D/tree/big.bin"
IMG="$D/vol.img"
truncate -s 1G "$IMG"
mkfs.ext4 -q -F -d "$D/tree" "$IMG"
rm -rf "$D/tree"
STORE="file://$D/store"
"$S" --store "$STORE" create vol --source "$IMG" >/dev/null


# The workloads; $1 is the variant number.
python_v() {
  local extras
  extras=$(python3 -c "import random; e='$EXTRA_MODS'.split(); print(','.join(random.Random($1).sample(e, 2)))")
  python3 -I -S -c "import sys, importlib; sys.path.insert(0, '$LO/lib'); sys.dont_write_bytecode = True
for m in '$CORE'.split() + '$extras'.split(','):
    importlib.import_module(m)
import email.parser, email.mime.multipart, http.client, xml.dom.minidom, urllib.request, logging.handlers
print(len(sys.modules))" > /dev/null
}
sqlite_v() {
  python3 - "$LO/db.sqlite" "$1" <<'PY'
import sqlite3, sys, random
db = sqlite3.connect(f"file:{sys.argv[1]}?mode=ro&immutable=1", uri=True)
r = random.Random(100 + int(sys.argv[2]))
for i in range(300):
    db.execute("select name, payload from items where id = ?", (r.randrange(100000),)).fetchall()
for i in range(100):
    db.execute("select o.qty, i.name from orders o join items i on i.id = o.item where o.item = ?", (r.randrange(100000),)).fetchall()
lo = r.randrange(90000)
db.execute("select count(*), sum(qty) from orders where id between ? and ?", (lo, lo + 10000)).fetchall()
PY
}
tree_v() {
  local dirs
  dirs=$(python3 -c "import random; print(' '.join('$LO/files/d%d' % d for d in random.Random(200 + $1).sample(range(30), 6)))")
  grep -r -l zzzzqqqq $dirs > /dev/null || true
}
# (Python, not fio: fio's offsets repeated across --randseed values here.)
random_v() {
  python3 - "$LO/big.bin" "$1" <<'PY'
import os, random, sys
r = random.Random(300 + int(sys.argv[2]))
fd = os.open(sys.argv[1], os.O_RDONLY)
os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_RANDOM)
n = os.fstat(fd).st_size // 4096
for _ in range(300):
    os.pread(fd, 4096, r.randrange(n) * 4096)
PY
}

# Sessions: training variants 1..TRAIN, unseen variants after them, and
# variant 1 once more ("the same session again").
TRAIN=4; UNSEEN=2
[ "$QUICK" = 1 ] && UNSEEN=1
record() { # family variant file
  drop; start_monitor "$3"
  mount -o loop,ro,noload "$MON/vol.img" "$LO"; "$1_v" "$2"; umount "$LO"
  stop_monitor
}
FAMILIES="python sqlite tree random"
for f in $FAMILIES; do
  for v in $(seq 1 $((TRAIN + UNSEEN))); do record "$f" "$v" "$D/$f-$v.trace"; done
  record "$f" 1 "$D/$f-again.trace"
  echo "hints_varied.sh: $f recorded" >&2
done

train_args() { local a="" f v; for f in "$@"; do for v in $(seq 1 $TRAIN); do a+=" --trace $D/$f-$v.trace"; done; done; echo "$a"; }
learn() { # model families...
  local m=$1; shift
  local flags=""; [ "$m" = flat ] && flags="--flat"
  case "$m" in h[0-9]*) flags="--history ${m#h}";; esac
  # shellcheck disable=SC2046
  "$S" --store "$STORE" hints vol $flags $(train_args "$@") > /dev/null
}
# One JSON line per evaluation: scenario, model, family, warm-up, result.
OUT="$D/evals.jsonl"; : > "$OUT"
evaluate() { # scenario model family trace warmup(yes|no)
  local nw=""; [ "$5" = no ] && nw="--no-warmup"
  "$S" --store "$STORE" hints vol --evaluate "$4" $nw --json \
    | python3 -c "import json,sys; print(json.dumps({'scenario':'$1','model':'$2','family':'$3','warmup':'$5','eval':json.load(sys.stdin)}))" >> "$OUT"
}
unseen() { local v; for v in $(seq $((TRAIN + 1)) $((TRAIN + UNSEEN))); do echo "$D/$1-$v.trace"; done; }

for m in flat new; do
  # Each family alone.
  for f in $FAMILIES; do
    learn "$m" "$f"
    for t in $(unseen "$f"); do
      evaluate alone "$m" "$f" "$t" yes; evaluate alone "$m" "$f" "$t" no
    done
    evaluate again "$m" "$f" "$D/$f-again.trace" no
  done
  # Three families on one snapshot.
  learn "$m" python sqlite tree
  for f in python sqlite tree; do
    for t in $(unseen "$f"); do evaluate mixed "$m" "$f" "$t" yes; done
  done
  # Families never trained on, on an image trained with others.
  learn "$m" python sqlite
  for f in tree random; do
    for t in $(unseen "$f"); do evaluate untrained "$m" "$f" "$t" yes; done
  done
  echo "hints_varied.sh: model $m evaluated" >&2
done
# History length of contexts, on the mixed snapshot.
for h in 0 1 2 4 8; do
  learn "h$h" python sqlite tree
  for f in python sqlite tree; do
    for t in $(unseen "$f"); do evaluate history "h$h" "$f" "$t" no; done
  done
done

# Fleet-scale learning: 10,000 stored traces (copies of the recorded ones
# under new names), learned with --from-store: time and peak memory.
FLEET=10000; [ "$QUICK" = 1 ] && FLEET=2000
TR="$D/store/traces/vol"; mkdir -p "$TR"
i=0
while [ $i -lt $FLEET ]; do
  for f in $D/*-[0-9].trace; do
    [ $i -ge $FLEET ] && break
    cp "$f" "$TR/host$i-$(basename "$f")"; i=$((i + 1))
  done
done
fleet=""
for n in 100 1000 $FLEET; do
  /usr/bin/time -f "%e %M" -o "$D/time" "$S" --store "$STORE" hints vol --from-store --max-sessions "$n" > /dev/null
  read -r secs kib < "$D/time"
  fleet+="| $FLEET | $n | $secs s | $((kib / 1024)) MiB |"$'\n'
done

python3 "$ROOT/bench/hints_varied_report.py" "$OUT" > "$D/tables.md"
cat > "$RESULTS/hints_varied.md" <<MD
## hints_varied (do hints generalize?)

Command: \`bench/hints_varied.sh\` (part of \`make bench\`). Machine: $(machine_line).
A 1 GiB ext4 image holding a Python library tree, a 1500-file tree, a 100k-row SQLite database and
a 256 MiB file; block size 512 KiB, 16-block groups. Families of sessions (each a fresh read-only
loop mount through \`snapahead monitor\`, caches dropped): **python** a program start importing a
fixed core of 8 packages and 2 of 6 extras, a different pair per variant; **sqlite** 300 lookups,
100 joins and a range on new random predicates; **tree** \`grep -r\` over 6 of 30 directories, a
different choice per variant; **random** 300 4 KiB \`fio randread\` on the large file, new offsets.
Hints learned from variants 1–$TRAIN of the families named (\`hints --trace ...\`, \`--flat\` for the
version-2 model), replayed with \`hints --evaluate --threshold 0.5\` on variants never seen
(window 2 s). "prefetched/read" is prefetched bytes over read bytes.

$(cat "$D/tables.md")

Fleet-scale learning (\`hints --from-store --max-sessions N\` with the traces above stored again
under new names; wall time and peak RSS from \`/usr/bin/time\`):

| traces stored | --max-sessions | time | peak memory |
| --- | --- | --- | --- |
$fleet
MD
cat "$RESULTS/hints_varied.md"
