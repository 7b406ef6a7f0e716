# Helpers for the benchmark scripts (sourced).
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
S="$ROOT/target/release/snapahead"
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
