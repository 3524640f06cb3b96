#!/usr/bin/env bash
# Scale-out on one host: PostgreSQL (metadata + job queue + cluster locks) + one api process + N workers + one
# scheduler, all sharing one data directory (installation keys, disks, chunk stores, storage accounts).
#
#   scripts/scale-out.sh start [WORKERS]   # default 2 workers; api on $PORT (8443), workers/scheduler on PORT+1…
#   scripts/scale-out.sh status            # /healthz of every process
#   scripts/scale-out.sh stop              # SIGTERM every process (in-flight jobs finish or run again elsewhere), stop PostgreSQL
#
# Environment: RSVAULT_DATA_DIR (default ./.rsvault-scale), PORT (default 8443), RSVAULT_DB_URL (an existing
# PostgreSQL database; default: a local cluster under $RSVAULT_DATA_DIR/pg started with the Debian binaries).
# Several hosts: run the same `rsvault serve --role …` lines on each, with RSVAULT_DB_URL pointing at one PostgreSQL
# and RSVAULT_DATA_DIR on one shared filesystem (NFS/CephFS); start the api first (it creates the installation).
set -euo pipefail
cd "$(dirname "$0")/.."
DATA="$(realpath -m "${RSVAULT_DATA_DIR:-./.rsvault-scale}")"
PORT="${PORT:-8443}"
RUN="$DATA/run"
PGDIR="$DATA/pg"
PGPORT="${PGPORT:-55432}"
BIN="$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1)"
as_pg() { if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }

start_pg() {
  if [ -n "${RSVAULT_DB_URL:-}" ]; then return; fi
  [ -n "$BIN" ] || { echo "PostgreSQL server binaries not found (apt-get install postgresql), or set RSVAULT_DB_URL" >&2; exit 1; }
  if [ ! -d "$PGDIR/data" ]; then
    mkdir -p "$PGDIR"; [ "$(id -u)" = 0 ] && chown postgres:postgres "$PGDIR"; chmod 700 "$PGDIR"
    as_pg "$BIN/initdb" -D "$PGDIR/data" -U postgres -A trust -E UTF8 --no-locale >"$RUN/initdb.log"
  fi
  as_pg "$BIN/pg_ctl" -D "$PGDIR/data" -l "$PGDIR/log" -w -o "-p $PGPORT -k $PGDIR -c listen_addresses=127.0.0.1" start >/dev/null
  "$BIN/psql" -h 127.0.0.1 -p "$PGPORT" -U postgres -Atc "select 1 from pg_database where datname = 'rsvault'" | grep -q 1 ||
    "$BIN/psql" -h 127.0.0.1 -p "$PGPORT" -U postgres -qc "create database rsvault"
  export RSVAULT_DB_URL="postgres://postgres@127.0.0.1:$PGPORT/rsvault"
}

serve() { # name role port
  node bin/rsvault.js serve --data-dir "$DATA" --db-url "$RSVAULT_DB_URL" --role "$2" --port "$3" >"$RUN/$1.log" 2>&1 &
  echo $! >"$RUN/$1.pid"
  for _ in $(seq 1 120); do grep -q 'listening on' "$RUN/$1.log" && { echo "$1 ($2) on https://localhost:$3/ pid $(cat "$RUN/$1.pid")"; return; }; sleep 0.5; done
  echo "$1 did not start; see $RUN/$1.log" >&2; exit 1
}

case "${1:-start}" in
  start)
    N="${2:-2}"
    mkdir -p "$RUN"
    start_pg
    serve api api "$PORT"
    for i in $(seq 1 "$N"); do serve "worker$i" worker $((PORT + i)); done
    serve scheduler scheduler $((PORT + N + 1))
    echo "credentials: $DATA/credentials.json   CA: $DATA/tls/ca.pem   logs: $RUN/*.log"
    ;;
  status)
    for f in "$RUN"/*.log; do
      p=$(grep -o 'listening on https://localhost:[0-9]*' "$f" | grep -o '[0-9]*$' || true)
      [ -n "$p" ] && echo "$(basename "$f" .log): $(curl -s --cacert "$DATA/tls/ca.pem" "https://localhost:$p/healthz" || echo down)"
    done
    ;;
  stop)
    for f in "$RUN"/*.pid; do [ -e "$f" ] && { kill "$(cat "$f")" 2>/dev/null || true; rm -f "$f"; }; done
    sleep 2
    [ -d "$PGDIR/data" ] && as_pg "$BIN/pg_ctl" -D "$PGDIR/data" -m fast -w stop >/dev/null 2>&1 || true
    echo stopped
    ;;
  *) echo "usage: $0 start [WORKERS] | status | stop" >&2; exit 2 ;;
esac
