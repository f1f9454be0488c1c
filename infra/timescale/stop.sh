#!/usr/bin/env bash
# Stop the TimescaleDB-in-WebAssembly server started by start.sh (idempotent).
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
PID_FILE="$ROOT/.local/run/timescale.pid"

if [ ! -f "$PID_FILE" ]; then
  echo "==> timescale: not running"
  exit 0
fi
pid="$(cat "$PID_FILE" 2>/dev/null || true)"
if [ -z "$pid" ] || ! kill -0 "$pid" 2>/dev/null; then
  echo "==> timescale: not running (stale pid file removed)"
  rm -f "$PID_FILE"
  exit 0
fi
# setsid made the server its own process-group leader: signal only that group.
kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null || true
for _ in $(seq 1 50); do
  kill -0 "$pid" 2>/dev/null || break
  sleep 0.2
done
if kill -0 "$pid" 2>/dev/null; then
  kill -KILL -- "-$pid" 2>/dev/null || kill -KILL "$pid" 2>/dev/null || true
fi
rm -f "$PID_FILE"
echo "==> timescale: stopped (pid $pid)"
