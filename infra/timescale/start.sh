#!/usr/bin/env bash
# Start the TimescaleDB-in-WebAssembly server (idempotent) and wait until psycopg2 answers.
#   bash infra/timescale/start.sh         -> prints the TimescaleDB version when ready
#   TIMESCALE_PORT=55433 (default)  TIMESCALE_DATA=<dir> (default: in-memory)
#   TIMESCALE_START_TIMEOUT=120 (seconds to wait for readiness)
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
PORT="${TIMESCALE_PORT:-55433}"
RUN_DIR="$ROOT/.local/run"
LOG_DIR="$ROOT/.local/log"
PID_FILE="$RUN_DIR/timescale.pid"
LOG_FILE="$LOG_DIR/timescale.log"
TIMEOUT="${TIMESCALE_START_TIMEOUT:-120}"
# PGlite accepts any user/password (it asks for one: pass any) and always serves user postgres.
URL="postgresql://postgres:postgres@127.0.0.1:${PORT}/postgres?sslmode=disable"
mkdir -p "$RUN_DIR" "$LOG_DIR"
# A relative TIMESCALE_DATA is taken from the repo root (e.g. .local/timescale); unset = in-memory.
if [ -n "${TIMESCALE_DATA:-}" ]; then
  case "$TIMESCALE_DATA" in /*) ;; *) TIMESCALE_DATA="$ROOT/$TIMESCALE_DATA" ;; esac
  mkdir -p "$(dirname "$TIMESCALE_DATA")"
  export TIMESCALE_DATA
fi

if [ -x "$ROOT/.venv/bin/python" ]; then PY="$ROOT/.venv/bin/python"; else PY="python3"; fi

# One short-lived connection: the server serves one client at a time, so never hold it open.
probe() {
  "$PY" - "$URL" <<'PYEOF' 2>/dev/null
import sys, psycopg2
conn = psycopg2.connect(sys.argv[1], connect_timeout=5)
conn.autocommit = True  # never leave a transaction open on the shared session
try:
    cur = conn.cursor()
    cur.execute("SELECT extversion FROM pg_extension WHERE extname = 'timescaledb'")
    row = cur.fetchone()
    if not row:
        sys.exit(1)
    print(row[0])
finally:
    conn.close()
PYEOF
}

running_pid() {
  [ -f "$PID_FILE" ] || return 1
  local pid; pid="$(cat "$PID_FILE" 2>/dev/null || true)"
  [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null && echo "$pid"
}

# 1. node_modules: npm ci only when missing or when the lockfile changed since the last install.
command -v node >/dev/null || { echo "timescale: node is not installed" >&2; exit 1; }
LOCK_SUM="$(sha256sum "$HERE/package-lock.json" | cut -d' ' -f1)"
STAMP="$HERE/node_modules/.easysmart-lock-sha256"
if [ ! -d "$HERE/node_modules" ] || [ "$(cat "$STAMP" 2>/dev/null || true)" != "$LOCK_SUM" ]; then
  echo "==> timescale: npm ci (infra/timescale)"
  t0=$(date +%s)
  (cd "$HERE" && npm ci --no-audit --no-fund --loglevel=error)
  echo "$LOCK_SUM" > "$STAMP"
  echo "==> timescale: npm ci took $(( $(date +%s) - t0 ))s"
fi

# 2. Already running and answering?
if pid="$(running_pid)"; then
  if v="$(probe)"; then
    echo "==> timescale: already running (pid $pid) on 127.0.0.1:$PORT, TimescaleDB $v"
    exit 0
  fi
else
  rm -f "$PID_FILE"
  if v="$(probe)"; then
    echo "timescale: port $PORT already answers with TimescaleDB $v but not from $PID_FILE;" \
         "stop that server or set TIMESCALE_PORT" >&2
    exit 1
  fi
  if (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null; then
    echo "timescale: port $PORT is taken by another program; set TIMESCALE_PORT" >&2
    exit 1
  fi
  echo "==> timescale: starting the server on 127.0.0.1:$PORT (log $LOG_FILE)"
  t0=$(date +%s.%N)
  cd "$HERE"
  TIMESCALE_PORT="$PORT" setsid node server.mjs >>"$LOG_FILE" 2>&1 < /dev/null &
  echo $! > "$PID_FILE"
  cd "$ROOT"
fi

# 3. Wait until psycopg2 connects and the extension answers.
pid="$(cat "$PID_FILE")"
t0="${t0:-$(date +%s.%N)}"
deadline=$(( $(date +%s) + TIMEOUT ))
until v="$(probe)"; do
  if ! kill -0 "$pid" 2>/dev/null; then
    echo "timescale: the server exited; last lines of $LOG_FILE:" >&2
    tail -n 30 "$LOG_FILE" >&2
    rm -f "$PID_FILE"
    exit 1
  fi
  if [ "$(date +%s)" -ge "$deadline" ]; then
    echo "timescale: not ready after ${TIMEOUT}s; last lines of $LOG_FILE:" >&2
    tail -n 30 "$LOG_FILE" >&2
    exit 1
  fi
  sleep 0.5
done
elapsed=$(awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }')
echo "==> timescale: ready in ${elapsed}s (pid $pid): TimescaleDB $v at $URL"
