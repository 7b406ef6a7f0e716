#!/usr/bin/env bash
# Read-path rework, two more side-by-side A/Bs of OLD_BIN against this
# build (alternating, RUNS each), printed, summarized by hand in
# bench/analysis.md:
#  (1) trained cold start on a 1 GiB ext4 image (the bench/lib.sh tree and
#      Python library), file:// store with 20 ms per GET: hints learned by
#      this build from two recorded sessions, then per build a fresh cache,
#      mount, loop-mount, scan + program start; the workload's and the whole
#      session's seconds, and the prefetch counts;
#  (2) cold `dd` of a 512 MiB random image from Garage behind latency-proxy
#      (10 ms each way, quickack on), MB/s and the mount's CPU seconds.
# usage: OLD_BIN=/path/to/old/snapahead bench/readpath_ab.sh
source "$(dirname "$0")/lib.sh"
OLD=${OLD_BIN:?set OLD_BIN to the build to compare with}
NEW=$S; RUNS=${RUNS:-3}
D="$WORK/readpath-ab"; PID=""; PX=""; ROUTES=""
cleanup() {
  set +e
  mountpoint -q "$D/lo" 2>/dev/null && umount "$D/lo"
  [ -n "$PID" ] && kill -TERM "$PID" 2>/dev/null && wait "$PID" 2>/dev/null
  [ -n "$PX" ] && kill "$PX" 2>/dev/null
  while IFS= read -r r; do [ -n "$r" ] && ip route change $r table local; done <<< "$ROUTES"
  rm -rf "$D"
}
trap cleanup EXIT
rm -rf "$D"; mkdir -p "$D/tree" "$D/mnt" "$D/lo"

# (1) trained cold start.
tree_files "$D/tree" 1500; tree_pylib "$D/tree"
mkfs.ext4 -q -d "$D/tree" "$D/img" 1G
"$NEW" --store "file://$D/store" create t --source "$D/img" > /dev/null
session() { # bin cachedir mount-flags... ; prints "workload_s whole_s"
  local bin=$1 cache=$2; shift 2
  local t0; t0=$(date +%s.%N)
  "$bin" --store "file://$D/store" mount "$D/mnt" --cache-dir "$cache" "$@" > "$D/m.log" 2>&1 & PID=$!
  for _ in $(seq 1 200); do [ -e "$D/mnt/t.img" ] && break; sleep 0.02; done
  mount -o loop,ro,noload "$D/mnt/t.img" "$D/lo"
  local t; t=$(timeit bash -c "source '$ROOT/bench/lib.sh'; wl_scan '$D/lo'; wl_program '$D/lo'")
  umount "$D/lo"
  local t1; t1=$(date +%s.%N)
  "$bin" stats "$D/mnt" | grep -E "^prefetch|done by" | tr -s ' ' | tr '\n' ' ' > "$D/pf.txt"
  kill -TERM "$PID"; wait "$PID"; PID=""
  echo "$t $(echo "$t1 - $t0" | bc -l)"
}
for _ in 1 2; do rm -rf "$D/rec"; drop; session "$NEW" "$D/rec" --no-prefetch --inject-latency 20ms --record-traces > /dev/null; done
"$NEW" --store "file://$D/store" hints t --from-store | head -1
for _ in $(seq 1 "$RUNS"); do for b in old new; do
  bin=$OLD; [ $b = new ] && bin=$NEW
  rm -rf "$D/c"; drop
  echo "(1) $b trained cold start: workload, whole session (s) $(session "$bin" "$D/c" --inject-latency 20ms) | $(cat "$D/pf.txt")"
done; done

# (2) cold dd from Garage behind the proxy.
"$ROOT/scripts/garage.sh" start > /dev/null 2>&1
eval "$("$ROOT/scripts/garage.sh" env)"
ROUTES=$(ip route show table local | grep -E '^local 127\.0\.0\.(1|0/8) ' || true)
while IFS= read -r r; do [ -n "$r" ] && ip route change $r table local quickack 1; done <<< "$ROUTES"
"$ROOT/target/release/latency-proxy" --listen 127.0.0.1:0 --upstream "${SNAPAHEAD_S3_ENDPOINT#http://}" --delay-ms 10 > "$D/px.out" 2>/dev/null & PX=$!
for _ in $(seq 1 100); do grep -q listening "$D/px.out" && break; sleep 0.05; done
PORT=$(sed -n 's/listening on 127.0.0.1://p' "$D/px.out")
printf 'store: s3://%s/readpath-ab-%s\ns3: { endpoint: http://127.0.0.1:%s, region: garage, allow_http: true }\n' \
  "$SNAPAHEAD_S3_BUCKET" "$$" "$PORT" > "$D/snapshots.yaml"
prng 9 $((512 << 20)) > "$D/vol.img"
"$NEW" --config "$D/snapshots.yaml" create v --source "$D/vol.img" > /dev/null
for _ in $(seq 1 "$RUNS"); do for b in old new; do
  bin=$OLD; [ $b = new ] && bin=$NEW
  rm -rf "$D/c"; drop
  "$bin" --config "$D/snapshots.yaml" mount "$D/mnt" --cache-dir "$D/c" > "$D/m.log" 2>&1 & PID=$!
  for _ in $(seq 1 200); do [ -e "$D/mnt/v.img" ] && break; sleep 0.02; done
  c0=$(cpu_seconds "$PID")
  t=$(timeit dd if="$D/mnt/v.img" of=/dev/null bs=1M status=none)
  c1=$(cpu_seconds "$PID")
  kill -TERM "$PID"; wait "$PID"; PID=""
  printf '(2) %s cold dd through the proxy %.0f MB/s, mount CPU %.2f s\n' $b "$(echo "512 / $t" | bc -l)" "$(echo "$c1 - $c0" | bc -l)"
done; done
"$NEW" --config "$D/snapshots.yaml" delete v > /dev/null
