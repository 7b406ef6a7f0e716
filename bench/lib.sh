# Helpers for the benchmark scripts (sourced).
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# SNAPAHEAD_BIN runs the benchmarks with another build (side-by-side A/B).
S=${SNAPAHEAD_BIN:-$ROOT/target/release/snapahead}
WORK=${SNAPAHEAD_BENCH_DIR:-/tmp/snapahead-bench}
RESULTS="$ROOT/bench/results"
mkdir -p "$WORK" "$RESULTS"

# Deterministic pseudo-random bytes: AES-CTR keystream with a fixed key.
# usage: prng SEED BYTES
prng() {
  local key; key=$(printf '%032x' "$1")
  head -c "$2" /dev/zero | openssl enc -aes-128-ctr -K "$key" -iv 00000000000000000000000000000000 -nosalt 2>/dev/null | head -c "$2"
}

# Seconds (float) taken by a command.
timeit() {
  local t0 t1
  t0=$(date +%s.%N); "$@" >/dev/null; t1=$(date +%s.%N)
  echo "$t1 - $t0" | bc -l
}

# Median of the arguments.
median() { printf '%s\n' "$@" | sort -g | awk '{a[NR]=$1} END {printf "%.6f\n", (NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2)}'; }

machine_line() {
  echo "$(nproc) cores, $(free -g | awk '/Mem:/ {print $2}') GiB RAM, $(uname -r), $(date -u +%Y-%m-%dT%H:%MZ)"
}

# A 100k-row SQLite database (items with 200-byte payloads, orders with an
# index on item), the same bytes every run. usage: make_db FILE
make_db() {
  python3 - "$1" <<'PY'
import sqlite3, sys, random
r = random.Random(5)
db = sqlite3.connect(sys.argv[1])
db.execute("create table items(id integer primary key, name text, payload blob)")
db.execute("create table orders(id integer primary key, item integer, qty integer)")
db.executemany("insert into items values(?,?,?)", ((i, f"item{i}", r.randbytes(200)) for i in range(100000)))
db.executemany("insert into orders values(?,?,?)", ((i, r.randrange(100000), r.randrange(10)) for i in range(100000)))
db.execute("create index orders_item on orders(item)")
db.commit()
PY
}

# The real workloads of the hints and prefetch benchmarks, on a tree that
# becomes an ext4 image. Deterministic: the same bytes and reads every run.
# usage: tree_files DIR N   — N files of 4-300 KiB in 30 directories under DIR/files
tree_files() {
  local i dir
  for i in $(seq 0 $(($2 - 1))); do
    dir="$1/files/d$((i % 30))"; mkdir -p "$dir"
    prng $((1000 + i)) $(( (i * 7919 % 300 + 4) * 1024 )) > "$dir/f$i"
  done
}
# usage: tree_pylib DIR   — a copy of a dozen packages of Python's stdlib under DIR/lib, byte-compiled
tree_pylib() {
  local p lib
  lib=$(python3 -c 'import sysconfig; print(sysconfig.get_paths()["stdlib"])')
  mkdir -p "$1/lib"
  for p in json email http xml asyncio concurrent urllib logging unittest html importlib collections; do
    cp -r "$lib/$p" "$1/lib/"
  done
  find "$1/lib" -name __pycache__ -prune -exec rm -rf {} +
  # Compiled anew for these copies (their mtimes), as a package install does:
  # imports then load .pyc files, so a start-up is mostly reading, not compiling.
  python3 -m compileall -q "$1/lib" > /dev/null
}
# Container start (coldstart.sh): a chroot into a Debian minbase root doing
# what an entrypoint would; perl loads modules perl-base holds (minbase has
# no perl-modules) and its failure fails the workload. usage: wl_container ROOT
wl_container() {
  chroot "$1" /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin /bin/bash -c \
    'dpkg-query -W -f="\${Package}\n" | xargs dpkg -L > /dev/null; apt-config dump > /dev/null;
     apt-cache policy > /dev/null 2>&1; perl -MFile::Temp -MGetopt::Long -MPOSIX -e 1 || exit 1;
     ls -R /usr/share/zoneinfo > /dev/null; cat /etc/*.conf > /dev/null 2>&1; true'
}
# File-tree scan: find + cat of a fixed third of the files. usage: wl_scan ROOT
wl_scan() { find "$1/files" -type f | sort | awk 'NR % 3 == 0' | xargs cat > /dev/null; }
# Program start: python importing a fixed set of packages from ROOT/lib. usage: wl_program ROOT
wl_program() {
  python3 -I -S -c "import sys; sys.path.insert(0, '$1/lib'); sys.dont_write_bytecode = True
import json, email.parser, email.mime.multipart, http.client, xml.dom.minidom, asyncio, concurrent.futures
import urllib.request, logging.handlers, unittest, html.parser, importlib.metadata
print('imported', len(sys.modules))" > /dev/null
}

# One counter of a running mount's `stats --json`. usage: stat_of NAME (uses $S and $MNT)
stat_of() { "$S" stats "$MNT" --json | python3 -c "import json,sys; print(json.load(sys.stdin)['metrics']['$1'])"; }

# fio 4 KiB random reads, QD16, O_DIRECT, for FIO_SECS on the first SIZE_MB
# of FILE. usage: fio_iops FILE   — prints "IOPS p99_ms"
fio_iops() {
  fio --name=rr --filename="$1" --rw=randread --bs=4k --iodepth=16 --ioengine=libaio --direct=1 \
      --time_based --runtime="$FIO_SECS" --size="${SIZE_MB}M" --output-format=json 2>/dev/null \
    | python3 -c 'import json,sys; j=json.load(sys.stdin)["jobs"][0]["read"]; print(round(j["iops"]), j["clat_ns"]["percentile"]["99.000000"]/1e6)'
}

# CPU seconds (user + system, all threads) a process has used. usage: cpu_seconds PID
cpu_seconds() {
  awk -v t="$(getconf CLK_TCK)" '{print ($14 + $15) / t}' "/proc/$1/stat"
}

# Recording sessions through `snapahead monitor` (hints.sh, hints_varied.sh),
# and cleaning up after a benchmark that mounts.
# Uses $D (work dir), $MON (the monitor's mountpoint), $LO (the loop mount),
# $IMG (the image) and sets $PID. usage: mount_cleanup; start_monitor TRACE;
# stop_monitor
# Unmounts the loop mount $LO, stops the mount or monitor $PID, detaches
# its mountpoint ($MON or $MNT) and removes $D.
mount_cleanup() {
  mountpoint -q "$LO" 2>/dev/null && umount "$LO"
  [ -n "${PID:-}" ] && kill -TERM "$PID" 2>/dev/null && wait "$PID" 2>/dev/null
  local mp
  for mp in "${MON:-}" "${MNT:-}"; do
    [ -n "$mp" ] && mountpoint -q "$mp" 2>/dev/null && fusermount3 -u -z "$mp"
  done
  rm -rf "$D"
}
drop() { sync; echo 3 > /proc/sys/vm/drop_caches; }
start_monitor() {
  "$S" monitor "$IMG" "$MON" --trace "$1" >"$D/monitor.log" 2>&1 &
  PID=$!
  for _ in $(seq 1 100); do [ -e "$MON/vol.img" ] && return; sleep 0.1; done
  cat "$D/monitor.log"; exit 1
}
# The loop device detaches shortly after umount (autoclear): wait for it
# (polling, 10 s at most) before the monitor unmounts, else it stays busy.
stop_monitor() {
  for _ in $(seq 1 100); do [ -z "$(losetup -j "$MON/vol.img")" ] && break; sleep 0.1; done
  kill -TERM "$PID"; wait "$PID" || true; PID=""
}
