#!/usr/bin/env bash
# Diagnostic for workload (a), not part of `make bench`: cold `dd bs=1M` of
# a 1 GiB random snapshot through Garage + latency-proxy (10 ms each way),
# once per FUSE read-ahead size in RAS (KiB, written to the mount's bdi),
# printing MiB/s and CPU seconds of Garage, the proxy and the mount.
# PERF=1 records a `perf` profile of the mount to $WORK/probe/perf.data.
# usage: RAS="128 1024" [PERF=1] bench/seq_probe.sh
source "$(dirname "$0")/lib.sh"
S=${SNAPAHEAD_BIN:-$S}   # another build to compare
P="$ROOT/target/release/latency-proxy"; PORT=3921
D="$WORK/probe"; MNT="$D/mnt"; PX=""; MP=""; PP=""
cleanup() {
  set +e
  [ -n "$PP" ] && kill -INT "$PP" 2>/dev/null
  [ -n "$MP" ] && { kill -TERM "$MP"; wait "$MP"; }
  mountpoint -q "$MNT" && fusermount3 -u "$MNT"
  [ -n "$PX" ] && kill "$PX"
}
trap cleanup EXIT
mkdir -p "$MNT"
"$ROOT/scripts/garage.sh" start >&2
eval "$("$ROOT/scripts/garage.sh" env)"
"$P" --listen 127.0.0.1:$PORT --upstream "${SNAPAHEAD_S3_ENDPOINT#http://}" --delay-ms 10 2>"$D/proxy.log" &
PX=$!
printf "s3: { endpoint: 'http://127.0.0.1:%s', region: garage, allow_http: true }\n" $PORT > "$D/snap.yaml"
ST="s3://$SNAPAHEAD_S3_BUCKET/probe"
[ -f "$D/seq.img" ] || prng 7 $((1 << 30)) > "$D/seq.img"
# (Re)created when missing: the test Garage's data does not outlive `garage.sh stop`.
"$S" --config "$D/snap.yaml" --store "$ST" inspect seq >/dev/null 2>&1 ||
  "$S" --config "$D/snap.yaml" --store "$ST" create seq --source "$D/seq.img" >/dev/null
secs() { awk -v t="$(getconf CLK_TCK)" '{printf "%.2f", ($14 + $15) / t}' "/proc/$1/stat"; }
for ra in ${RAS:-128 1024}; do
  rm -rf "$D/c"; sync; echo 3 > /proc/sys/vm/drop_caches
  "$S" --config "$D/snap.yaml" --store "$ST" mount "$MNT" --cache-dir "$D/c" --snapshot seq 2>"$D/mount.log" &
  MP=$!
  for _ in $(seq 200); do [ -e "$MNT/seq.img" ] && break; sleep 0.05; done
  [ -e "$MNT/seq.img" ] || { echo "seq_probe.sh: the mount did not come up:"; cat "$D/mount.log"; exit 1; }
  echo "$ra" > "/sys/class/bdi/$(mountpoint -d "$MNT")/read_ahead_kb"
  G=$(pgrep -x garage | head -1)
  g0=$(secs "$G"); p0=$(secs "$PX"); m0=$(secs "$MP")
  [ -n "${PERF:-}" ] && { perf record -F 999 -g -p "$MP" -o "$D/perf.data" 2>/dev/null & PP=$!; sleep 0.3; }
  t0=$(date +%s.%N)
  dd if="$MNT/seq.img" of=/dev/null bs=1M status=none
  t1=$(date +%s.%N)
  [ -n "$PP" ] && { kill -INT "$PP"; wait "$PP" || true; PP=""; }
  printf "read_ahead_kb=%s: %.0f MiB/s; CPU s: garage %.2f, proxy %.2f, mount %.2f\n" "$ra" \
    "$(echo "1024 / ($t1 - $t0)" | bc -l)" "$(echo "$(secs "$G") - $g0" | bc)" \
    "$(echo "$(secs "$PX") - $p0" | bc)" "$(echo "$(secs "$MP") - $m0" | bc)"
  kill -TERM "$MP"; wait "$MP" || true; MP=""
done
