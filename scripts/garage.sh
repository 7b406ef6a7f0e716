#!/usr/bin/env bash
# A single-node Garage S3 server on 127.0.0.1, for tests and benchmarks.
#
#   scripts/garage.sh start   # install Garage if missing, start it, create key + bucket
#   scripts/garage.sh env     # print `export ...` lines for clients (source them)
#   scripts/garage.sh stop    # stop the server and delete its data
#
# Garage is found on PATH, as $GARAGE_BIN, or in $SNAPAHEAD_TOOLS/bin; when
# missing it is built with `cargo install garage --locked` into
# $SNAPAHEAD_TOOLS (about 9 minutes on 2 cores, once per machine).
# Ports: S3 $GARAGE_S3_PORT (3900), RPC +1, admin +3. Idempotent: `start`
# on a running server only prints where it is.
set -euo pipefail

TOOLS=${SNAPAHEAD_TOOLS:-$HOME/.cache/snapahead}
DIR=${SNAPAHEAD_GARAGE_DIR:-/tmp/snapahead-garage}
S3_PORT=${GARAGE_S3_PORT:-3900}
RPC_PORT=$((S3_PORT + 1))
ADMIN_PORT=$((S3_PORT + 3))
BUCKET=${GARAGE_BUCKET:-snapahead}
KEY_NAME=snapahead

find_garage() {
  if [ -n "${GARAGE_BIN:-}" ] && [ -x "$GARAGE_BIN" ]; then echo "$GARAGE_BIN"; return; fi
  if command -v garage >/dev/null 2>&1; then command -v garage; return; fi
  if [ -x "$TOOLS/bin/garage" ]; then echo "$TOOLS/bin/garage"; return; fi
  return 1
}

install_garage() {
  echo "garage.sh: Garage not found; building it with cargo install (takes ~10 minutes once)" >&2
  mkdir -p "$TOOLS"
  cargo install garage --locked --root "$TOOLS" >&2
}

G() { "$GARAGE" -c "$DIR/garage.toml" "$@"; }

running() {
  [ -f "$DIR/pid" ] && kill -0 "$(cat "$DIR/pid")" 2>/dev/null && G status >/dev/null 2>&1
}

start() {
  GARAGE=$(find_garage) || { install_garage; GARAGE=$(find_garage); }
  if running && [ -f "$DIR/env" ]; then
    echo "garage.sh: already running at http://127.0.0.1:$S3_PORT ($DIR)" >&2
    return
  fi
  stop_server
  rm -rf "$DIR"; mkdir -p "$DIR"; chmod 700 "$DIR"
  cat > "$DIR/garage.toml" <<TOML
metadata_dir = "$DIR/meta"
data_dir = "$DIR/data"
db_engine = "sqlite"
replication_factor = 1
rpc_bind_addr = "127.0.0.1:$RPC_PORT"
rpc_public_addr = "127.0.0.1:$RPC_PORT"
rpc_secret = "$(head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n')"
[s3_api]
s3_region = "garage"
api_bind_addr = "127.0.0.1:$S3_PORT"
root_domain = ".s3.garage.localhost"
[admin]
api_bind_addr = "127.0.0.1:$ADMIN_PORT"
TOML
  setsid "$GARAGE" -c "$DIR/garage.toml" server > "$DIR/server.log" 2>&1 < /dev/null &
  echo $! > "$DIR/pid"
  for _ in $(seq 1 100); do G status >/dev/null 2>&1 && break; sleep 0.1; done
  G status >/dev/null 2>&1 || { echo "garage.sh: server did not start; see $DIR/server.log" >&2; tail -5 "$DIR/server.log" >&2; exit 1; }
  local id
  id=$(G node id -q | cut -d@ -f1)
  G layout assign -z dc1 -c 1G "$id" >/dev/null
  G layout apply --version 1 >/dev/null
  local out key secret
  out=$(G key create "$KEY_NAME")
  key=$(echo "$out" | awk '/Key ID:/ {print $3}')
  secret=$(echo "$out" | awk '/Secret key:/ {print $3}')
  [ -n "$key" ] && [ -n "$secret" ] || { echo "garage.sh: could not read the key from: $out" >&2; exit 1; }
  # The bucket needs the layout to be live; retry briefly.
  for _ in $(seq 1 50); do G bucket create "$BUCKET" >/dev/null 2>&1 && break; sleep 0.2; done
  G bucket allow --read --write --owner "$BUCKET" --key "$KEY_NAME" >/dev/null
  cat > "$DIR/env" <<ENV
export AWS_ACCESS_KEY_ID=$key
export AWS_SECRET_ACCESS_KEY=$secret
export AWS_REGION=garage
export AWS_DEFAULT_REGION=garage
export SNAPAHEAD_S3_ENDPOINT=http://127.0.0.1:$S3_PORT
export SNAPAHEAD_S3_BUCKET=$BUCKET
export SNAPAHEAD_GARAGE_DIR=$DIR
ENV
  chmod 600 "$DIR/env"
  echo "garage.sh: Garage ready at http://127.0.0.1:$S3_PORT, bucket $BUCKET ($DIR)" >&2
}

stop_server() {
  if [ -f "$DIR/pid" ]; then
    local pid; pid=$(cat "$DIR/pid")
    kill "$pid" 2>/dev/null || true
    for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$pid" 2>/dev/null || true
    rm -f "$DIR/pid"
  fi
}

case "${1:-}" in
  start) start ;;
  env) [ -f "$DIR/env" ] || { echo "garage.sh: not started (run: $0 start)" >&2; exit 1; }; cat "$DIR/env" ;;
  stop) stop_server; rm -rf "$DIR" ;;
  *) echo "usage: $0 start|env|stop" >&2; exit 2 ;;
esac
