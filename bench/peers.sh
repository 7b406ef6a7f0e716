#!/usr/bin/env bash
# snapahead against the tools a user would pick instead (issue: benchmarks),
# all on the same Garage bucket through the same latency proxy
# (`latency-proxy`, 10 ms each way), each image loop-mounted the same way:
#   snap      snapahead mount (prefetch on, hints learned)
#   snap-new  snapahead mount of the same images never traced (first session:
#             fetch unit sized by the link, ext4 prior, hydration)
#   snap-new-old  snap-new with the build OLD_BIN names (same-run A/B of a change)
#   snap-old  snap (trained) with the build OLD_BIN names
#   snap-off  snapahead mount --no-prefetch
#   rclone    rclone mount --read-only --vfs-cache-mode full
#   rclone-t  ... plus --vfs-read-ahead 256M --buffer-size 64M
#   s3fs      s3fs -o ro,use_cache
#   s3fs-t    ... plus parallel_count=16,multireq_max=16
# The peers read the same images uploaded as one raw object each.
# Workloads: (a) cold sequential read of a random image (dd bs=1M, cp);
# (b) trained cold start: mount, loop-mount, file-tree scan + program start;
# (c) fio randread 4 KiB QD16; (d) mount start -> first byte of a file in the
# loop-mounted fs; (e) fully cached re-read (page cache dropped);
# (f) stored bytes and bytes through the proxy per workload;
# (g) snapahead only: fio (c) again with hydration off (its effect on p99),
# and an idle mount hydrating the whole random image (time, rate);
# (h) each on its own fresh mount and empty cache: the program start alone,
# `tar` of the whole tree, `dd` of the whole ext4 image.
# usage: bench/peers.sh [--quick]     (env: RUNS, FIO_SECS, SEQ_MB, DELAY_MS, BANDWIDTH)
source "$(dirname "$0")/lib.sh"
QUICK=""; [ "${1:-}" = "--quick" ] && QUICK=1
SEQ_MB=${SEQ_MB:-$([ -n "$QUICK" ] && echo 512 || echo 2048)}
RUNS=${RUNS:-$([ -n "$QUICK" ] && echo 1 || echo 3)}
FIO_SECS=${FIO_SECS:-$([ -n "$QUICK" ] && echo 10 || echo 60)}
DELAY_MS=${DELAY_MS:-10}
BANDWIDTH=${BANDWIDTH:-0}
TOOLS=${TOOLS:-"snap snap-new snap-off rclone rclone-t s3fs s3fs-t"}
PROXY_PORT=3920
D="$WORK/peers"; MNT="$D/mnt"; LO="$D/lo"; PID=""; PXPID=""; ROUTES=""; RUN_ID=""; UP=""; BUCKET=""
P="$ROOT/target/release/latency-proxy"

# The peers and fio, from Debian (idempotent).
for c in rclone s3fs fio bc; do
  command -v $c >/dev/null || { DEBIAN_FRONTEND=noninteractive apt-get install -y rclone s3fs fio bc >&2; break; }
done

cleanup() {
  set +e
  mountpoint -q "$LO" 2>/dev/null && umount "$LO"
  if mountpoint -q "$MNT" 2>/dev/null; then fusermount3 -u "$MNT" || fusermount3 -u -z "$MNT"; fi
  [ -n "$PID" ] && { kill -TERM "$PID" 2>/dev/null; wait "$PID" 2>/dev/null; }
  [ -n "$PXPID" ] && { kill -TERM "$PXPID" 2>/dev/null; wait "$PXPID" 2>/dev/null; }
  # This run's objects leave the bucket.
  [ -n "${RUN_ID:-}" ] && RCLONE_CONFIG_G_ENDPOINT=http://$UP env -u AWS_CA_BUNDLE \
    rclone purge "g:$BUCKET/bench-$RUN_ID" 2>/dev/null
  # Put the loopback routes back as they were.
  while IFS= read -r r; do [ -n "$r" ] && ip route change $r table local; done <<< "$ROUTES"
  rm -rf "$D"
}
trap cleanup EXIT
cleanup; mkdir -p "$D" "$MNT" "$LO"

# Garage and its credentials.
"$ROOT/scripts/garage.sh" start >&2
eval "$("$ROOT/scripts/garage.sh" env)"
BUCKET=$SNAPAHEAD_S3_BUCKET
UP=${SNAPAHEAD_S3_ENDPOINT#http://}
# Garage sets no TCP_NODELAY: small responses stall on delayed ACKs (~40 ms)
# unless loopback ACKs quickly. Real S3 does not show this artifact.
ROUTES=$(ip route show table local | grep -E '^local 127\.0\.0\.(1|0/8) ' || true)
while IFS= read -r r; do [ -n "$r" ] && ip route change $r table local quickack 1; done <<< "$ROUTES"

"$P" --listen 127.0.0.1:$PROXY_PORT --upstream "$UP" --delay-ms "$DELAY_MS" --bandwidth "$BANDWIDTH" \
  --stats "$D/proxy.stats" 2>"$D/proxy.log" &
PXPID=$!
EP=http://127.0.0.1:$PROXY_PORT
for _ in $(seq 1 50); do [ -f "$D/proxy.stats" ] && break; sleep 0.1; done
down_bytes() { awk '/^down/ {print $2}' "$D/proxy.stats"; }
# Counters are rewritten every 200 ms.
settle() { sleep 0.5; }

# rclone and s3fs configuration (AWS_CA_BUNDLE breaks rclone's plain-http S3).
export RCLONE_CONFIG_G_TYPE=s3 RCLONE_CONFIG_G_PROVIDER=Other RCLONE_CONFIG_G_REGION=garage \
  RCLONE_CONFIG_G_ACCESS_KEY_ID=$AWS_ACCESS_KEY_ID RCLONE_CONFIG_G_SECRET_ACCESS_KEY=$AWS_SECRET_ACCESS_KEY \
  RCLONE_CONFIG_G_FORCE_PATH_STYLE=true RCLONE_CONFIG_G_ENDPOINT=$EP
printf '%s:%s\n' "$AWS_ACCESS_KEY_ID" "$AWS_SECRET_ACCESS_KEY" > "$D/s3fs.passwd"; chmod 600 "$D/s3fs.passwd"
RUN_ID=$(date +%s)
PEERS_PREFIX="bench-$RUN_ID/peers"; SNAP_STORE="s3://$BUCKET/bench-$RUN_ID/snap"
NEW_STORE="s3://$BUCKET/bench-$RUN_ID/snap-new"
cat > "$D/snap.yaml" <<Y
s3: { endpoint: '$EP', region: garage, allow_http: true }
Y
cat > "$D/snap-nohyd.yaml" <<Y
s3: { endpoint: '$EP', region: garage, allow_http: true }
prefetch: { hydrate: "off" }
Y
cat > "$D/snap-direct.yaml" <<Y
s3: { endpoint: 'http://$UP', region: garage, allow_http: true }
Y

echo "peers.sh: making the images" >&2
prng 9 $((SEQ_MB * 1048576)) > "$D/seq.img"
PYLIB=$(python3 -c 'import sysconfig; print(sysconfig.get_paths()["stdlib"])')
mkdir -p "$D/tree/lib"
for i in $(seq 0 1499); do
  dir="$D/tree/files/d$((i % 30))"; mkdir -p "$dir"
  prng $((1000 + i)) $(( (i * 7919 % 300 + 4) * 1024 )) > "$dir/f$i"
done
for p in json email http xml asyncio concurrent urllib logging unittest html importlib collections; do
  cp -r "$PYLIB/$p" "$D/tree/lib/"
done
find "$D/tree/lib" -name __pycache__ -prune -exec rm -rf {} +
truncate -s 1G "$D/vol.img"; mkfs.ext4 -q -F -d "$D/tree" "$D/vol.img"; rm -rf "$D/tree"

echo "peers.sh: uploading (snapahead create; one raw object per image for the peers)" >&2
for img in seq vol; do
  "$S" --config "$D/snap-direct.yaml" --store "$SNAP_STORE" create $img --source "$D/$img.img" >/dev/null
  # The untrained copy: same images, a store prefix no session is recorded in.
  "$S" --config "$D/snap-direct.yaml" --store "$NEW_STORE" create $img --source "$D/$img.img" >/dev/null
  RCLONE_CONFIG_G_ENDPOINT=http://$UP env -u AWS_CA_BUNDLE rclone copyto "$D/$img.img" "g:$BUCKET/$PEERS_PREFIX/$img.img" \
    --s3-upload-concurrency 8 --s3-chunk-size 16M
done
stored_seq=$("$S" --config "$D/snap-direct.yaml" --store "$SNAP_STORE" inspect seq --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["stored_bytes"])')
stored_snap=$(RCLONE_CONFIG_G_ENDPOINT=http://$UP env -u AWS_CA_BUNDLE rclone size "g:$BUCKET/bench-$RUN_ID/snap" --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["bytes"])')
stored_peer=$(RCLONE_CONFIG_G_ENDPOINT=http://$UP env -u AWS_CA_BUNDLE rclone size "g:$BUCKET/$PEERS_PREFIX" --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["bytes"])')

wait_file() {
  for _ in $(seq 1 300); do [ -e "$MNT/$1" ] && return 0; sleep 0.02; done
  echo "peers.sh: $TOOL did not come up"; cat "$D/tool.log"; exit 1
}
# start TOOL CACHE IMAGE [extra snapahead flags]: mounts in the background (PID is the
# tool's own). snapahead mounts only IMAGE's snapshot (as a user would); the peers
# mount the prefix holding both raw images and fetch nothing until read.
start() {
  TOOL=$1; local c=$2 img=$3; shift 3
  local cmd
  case $TOOL in
    snap) cmd=("$S" --config "$D/snap.yaml" --store "$SNAP_STORE" mount "$MNT" --cache-dir "$c" --snapshot "$img" "$@") ;;
    snap-new) cmd=("$S" --config "$D/snap.yaml" --store "$NEW_STORE" mount "$MNT" --cache-dir "$c" --snapshot "$img" "$@") ;;
    snap-old) cmd=("${OLD_BIN:?snap-old needs OLD_BIN}" --config "$D/snap.yaml" --store "$SNAP_STORE" mount "$MNT" --cache-dir "$c" --snapshot "$img" "$@") ;;
    snap-new-old) cmd=("${OLD_BIN:?snap-new-old needs OLD_BIN}" --config "$D/snap.yaml" --store "$NEW_STORE" mount "$MNT" --cache-dir "$c" --snapshot "$img" "$@") ;;
    snap-new-nohyd) cmd=("$S" --config "$D/snap-nohyd.yaml" --store "$NEW_STORE" mount "$MNT" --cache-dir "$c" --snapshot "$img" "$@") ;;
    snap-nohyd) cmd=("$S" --config "$D/snap-nohyd.yaml" --store "$SNAP_STORE" mount "$MNT" --cache-dir "$c" --snapshot "$img" "$@") ;;
    snap-off) cmd=("$S" --config "$D/snap.yaml" --store "$SNAP_STORE" mount "$MNT" --cache-dir "$c" --snapshot "$img" --no-prefetch "$@") ;;
    rclone|rclone-t)
      cmd=(env -u AWS_CA_BUNDLE rclone mount "g:$BUCKET/$PEERS_PREFIX" "$MNT" --read-only --vfs-cache-mode full
        --cache-dir "$c" --vfs-cache-max-size 8G)
      [ "$TOOL" = rclone-t ] && cmd+=(--vfs-read-ahead 256M --buffer-size 64M) ;;
    s3fs|s3fs-t)
      local o="url=$EP,use_path_request_style,passwd_file=$D/s3fs.passwd,ro,endpoint=garage,use_cache=$c"
      [ "$TOOL" = s3fs-t ] && o="$o,parallel_count=16,multireq_max=16"
      mkdir -p "$c"; cmd=(s3fs "$BUCKET:/$PEERS_PREFIX" "$MNT" -f -o "$o") ;;
  esac
  "${cmd[@]}" >"$D/tool.log" 2>&1 &
  PID=$!
}
stop() {
  mountpoint -q "$LO" && umount "$LO"
  case $TOOL in
    snap*) kill -TERM "$PID" ;;
    *) fusermount3 -u "$MNT" || { sleep 1; fusermount3 -u -z "$MNT"; } ;;
  esac
  wait "$PID" || true; PID=""
}
loop() { mount -o loop,ro,noload "$MNT/vol.img" "$LO"; }
scan() { find "$LO/files" -type f | sort | awk 'NR % 3 == 0' | xargs cat > /dev/null; }
program() {
  python3 -I -S -c "import sys; sys.path.insert(0, '$LO/lib'); sys.dont_write_bytecode = True
import json, email.parser, email.mime.multipart, http.client, xml.dom.minidom, asyncio, concurrent.futures
import urllib.request, logging.handlers, unittest, html.parser, importlib.metadata" > /dev/null
}
now() { date +%s.%N; }
# CPU time (clock ticks, user + system) of a process, and of the whole machine.
TCK=$(getconf CLK_TCK)
ticks() { awk '{print $14 + $15}' "/proc/$1/stat" 2>/dev/null || echo 0; }
busy() { awk '/^cpu / {print $2 + $3 + $4 + $7 + $8}' /proc/stat; }
server_ticks() { echo $(( $(ticks "$(pgrep -x garage | head -1)") + $(ticks "$PXPID") )); }
# CPU seconds per GiB read: per_gib TICKS
per_gib() { printf "%.6f" "$(echo "$1 / $TCK / ($SEQ_MB / 1024)" | bc -l)"; }
el() { printf "%.6f" "$(echo "$(now) - $1" | bc -l)"; }
fio_json() {
  fio --name=rr --filename="$MNT/seq.img" --rw=randread --bs=4k --iodepth=16 --ioengine=libaio --direct=1 \
    --time_based --runtime="$FIO_SECS" --size="${SEQ_MB}M" --output-format=json 2>/dev/null \
  | python3 -c 'import json,sys; r=json.load(sys.stdin)["jobs"][0]["read"]; p=r["clat_ns"]["percentile"]
print(round(r["iops"]), round(p["50.000000"]/1e6,2), round(p["99.000000"]/1e6,2))'
}

# Train snapahead: two recorded sessions of the cold-start workload.
echo "peers.sh: recording two sessions for the hints" >&2
for s in 1 2; do
  rm -rf "$D/c"; drop; start snap "$D/c" vol --record-traces; wait_file vol.img
  loop; scan; program; stop
done
"$S" --config "$D/snap-direct.yaml" --store "$SNAP_STORE" hints vol --from-store >/dev/null

declare -A R   # R[tool,metric] = space-separated values, one per run
add() { R[$1,$2]="${R[$1,$2]:-} $3"; }
for run in $(seq 1 "$RUNS"); do
  for t in $TOOLS; do
    echo "peers.sh: run $run, $t" >&2
    # (d) + (b): fresh cache, mount start -> first byte, then the cold start.
    rm -rf "$D/c"; drop; b0=$(down_bytes); t0=$(now)
    start $t "$D/c" vol; wait_file vol.img; loop; head -c1 "$LO/files/d0/f0" >/dev/null
    add $t first_byte "$(el "$t0")"
    t1=$(now); scan; add $t scan "$(el "$t1")"
    t2=$(now); program; add $t program "$(el "$t2")"
    add $t cold_start "$(el "$t0")"
    # PEERS_STATS=1: what snapahead's mount saw, on stderr.
    [ -n "${PEERS_STATS:-}" ] && case $t in snap*) "$S" stats "$MNT" >&2 ;; esac
    settle; add $t cold_start_bytes $(( $(down_bytes) - b0 ))
    # The floor: the same scan + program again from the tool's cache.
    drop; t3=$(now); scan; program; add $t warm_start "$(el "$t3")"
    stop
    # (h) one workload per fresh mount, timed from the loop mount.
    for w in program tar; do
      rm -rf "$D/c"; drop
      start $t "$D/c" vol; wait_file vol.img; loop
      t0=$(now)
      # (GNU tar skips reading files when writing to /dev/null itself.)
      if [ $w = tar ]; then tar cf - -C "$LO" . | cat > /dev/null; else program; fi
      add $t alone_$w "$(el "$t0")"
      stop
    done
    rm -rf "$D/c"; drop
    start $t "$D/c" vol; wait_file vol.img
    t0=$(now); dd if="$MNT/vol.img" of=/dev/null bs=1M status=none; add $t alone_dd "$(el "$t0")"
    stop
    # (a) cold sequential, dd and cp; (e) cached re-read after dd.
    for how in dd cp; do
      rm -rf "$D/c"; drop; b0=$(down_bytes)
      start $t "$D/c" seq; wait_file seq.img
      c_tool=$(ticks "$PID"); c_srv=$(server_ticks); c_all=$(busy); t0=$(now)
      if [ $how = dd ]; then dd if="$MNT/seq.img" of=/dev/null bs=1M status=none; else cp "$MNT/seq.img" /dev/null; fi
      add $t seq_$how "$(el "$t0")"
      if [ $how = dd ]; then
        # Where the CPU went while dd ran: the tool, Garage + proxy, all (kernel included).
        add $t dd_cpu_tool "$(per_gib $(( $(ticks "$PID") - c_tool )))"
        add $t dd_cpu_server "$(per_gib $(( $(server_ticks) - c_srv )))"
        add $t dd_cpu_all "$(per_gib $(( $(busy) - c_all )))"
      fi
      settle; add $t seq_${how}_bytes $(( $(down_bytes) - b0 ))
      if [ $how = dd ]; then
        drop; b0=$(down_bytes); t0=$(now)
        dd if="$MNT/seq.img" of=/dev/null bs=1M status=none
        add $t cached "$(el "$t0")"; settle; add $t cached_bytes $(( $(down_bytes) - b0 ))
      fi
      stop
    done
    # (c) random reads on a fresh cache.
    rm -rf "$D/c"; drop; b0=$(down_bytes)
    start $t "$D/c" seq; wait_file seq.img
    read -r iops p50 p99 <<< "$(fio_json)"
    add $t iops "$iops"; add $t p50 "$p50"; add $t p99 "$p99"
    settle; add $t fio_bytes $(( $(down_bytes) - b0 ))
    stop
    if [ $t = snap ]; then
      # (g) the same fio without hydration, then an idle mount hydrating seq.
      rm -rf "$D/c"; drop; b0=$(down_bytes)
      start snap-nohyd "$D/c" seq; wait_file seq.img
      read -r iops p50 p99 <<< "$(fio_json)"
      add $t iops_nohyd "$iops"; add $t p99_nohyd "$p99"
      settle; add $t fio_bytes_nohyd $(( $(down_bytes) - b0 ))
      stop; TOOL=snap
      rm -rf "$D/c"; drop
      start snap "$D/c" seq; wait_file seq.img; b0=$(down_bytes); t0=$(now)
      for _ in $(seq 1 6000); do
        st=$("$S" stats "$MNT" --json 2>/dev/null | python3 -c 'import json,sys
h=json.load(sys.stdin)["prefetch"]["snapshots"][0].get("hydration") or {}; print(h.get("state","none"))' 2>/dev/null)
        case $st in done|capped|too_large|off|local_store|none) break ;; esac
        sleep 0.05
      done
      add $t hydrate_s "$(el "$t0")"; settle; add $t hydrate_bytes $(( $(down_bytes) - b0 ))
      echo "peers.sh: hydration ended: $st" >&2
      stop
    fi
  done
done

# Results: medians per tool and metric, as JSON for the table and the plot.
{
  echo "{"
  echo "\"settings\": {\"delay_ms\": $DELAY_MS, \"bandwidth\": \"$BANDWIDTH\", \"seq_mb\": $SEQ_MB, \"runs\": $RUNS, \"fio_secs\": $FIO_SECS,"
  echo " \"stored_snap\": $stored_snap, \"stored_seq\": $stored_seq, \"stored_peer\": $stored_peer, \"machine\": \"$(machine_line)\", \"quick\": \"$QUICK\"},"
  echo "\"tools\": {"
  first=1
  for t in $TOOLS; do
    [ $first = 1 ] || echo ","; first=0
    echo -n "\"$t\": {"
    f2=1
    for k in first_byte scan program cold_start cold_start_bytes warm_start seq_dd seq_dd_bytes dd_cpu_tool dd_cpu_server dd_cpu_all seq_cp seq_cp_bytes cached cached_bytes iops p50 p99 fio_bytes alone_program alone_tar alone_dd iops_nohyd p99_nohyd fio_bytes_nohyd hydrate_s hydrate_bytes; do
      [ -n "${R[$t,$k]:-}" ] || continue
      [ $f2 = 1 ] || echo -n ", "; f2=0
      echo -n "\"$k\": $(median ${R[$t,$k]})"
    done
    echo -n "}"
  done
  echo "}}"
} > "$RESULTS/peers.json"
python3 "$ROOT/bench/peers_report.py" "$RESULTS/peers.json" "$RESULTS/peers.md" "$ROOT/docs/peers.svg" \
  "bench/peers.sh${QUICK:+ --quick}"
cat "$RESULTS/peers.md"
