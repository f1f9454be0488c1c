#!/usr/bin/env bash
# The container-free local stack: start, stop and inspect its processes.
#   stack.sh start [service...]    (no service: everything, in dependency order)
#   stack.sh stop [service...]     (no service: everything, in reverse order)
#   stack.sh restart service...
#   stack.sh status
# Services: postgres redis kafka s3 auth ingest process analytics retention alerts notify stream admin collector outbox-relay
#   kafka-bridge ping-bridge frontdoor prometheus
# prometheus (scraping the others, with infra/observability/rules.yml) starts with the rest only when OBSERVE=1,
# or when named; a plain `stop` stops it too.
# State lives under .local/ (data survives stop/start); each process has .local/run/<name>.pid
# (its process group) and .local/log/<name>.log.
# Supervision: `start` arms a service (.local/run/<name>.armed) and makes sure the supervisor runs; the
# supervisor restarts an armed service that died, with a growing delay if it keeps dying, and logs each
# restart to .local/log/supervisor.log. `stop` disarms a service first, so stopping on purpose sticks.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
cd "$ROOT"
set -a
# shellcheck source=local.env
source infra/local/local.env
set +a

LOCAL="$ROOT/.local"
RUN="$LOCAL/run"
LOGS="$LOCAL/log"
mkdir -p "$RUN" "$LOGS" "$LOCAL/secrets"
# The collector reports the free space of the stack's state folder.
export COLLECTOR_WATCH_PATHS="${COLLECTOR_WATCH_PATHS:-state=$LOCAL}"
# A secret not set in the environment is generated once into .local/secrets and kept.
secret_from_file() {  # variable file
  if [ -z "${!1:-}" ]; then
    if [ ! -s "$LOCAL/secrets/$2" ]; then
      (umask 077; head -c 48 /dev/urandom | base64 -w0 > "$LOCAL/secrets/$2")
    fi
    printf -v "$1" '%s' "$(cat "$LOCAL/secrets/$2")"
    export "${1?}"
  fi
}
secret_from_file JWT_SECRET jwt-secret
# The front door sends it to auth and ingest (X-ESM-Proxy-Secret); it is written into nginx.conf.
secret_from_file FRONT_PROXY_SECRET front-proxy-secret
[[ "$FRONT_PROXY_SECRET" =~ ^[A-Za-z0-9+/=_-]{32,}$ ]] \
  || { echo "FRONT_PROXY_SECRET must be at least 32 characters of A-Z a-z 0-9 + / = _ -" >&2; exit 1; }
# Ingest signs claim checks with this key and process verifies them with it.
secret_from_file CLAIM_SIGNING_KEY claim-signing-key

ALL=(postgres redis kafka s3 auth ingest process analytics retention alerts notify stream admin collector outbox-relay
     kafka-bridge ping-bridge frontdoor)
ALL+=(prometheus)
OPTIONAL=" prometheus "
SUPERVISE_INTERVAL_S="${SUPERVISE_INTERVAL_S:-2}"
SUPERVISE_MAX_DELAY_S="${SUPERVISE_MAX_DELAY_S:-60}"
FUNCTIONS=" auth ingest process analytics retention alerts notify stream admin collector "

say() { printf '%s\n' "$*"; }
now() { date +%s.%N; }
since() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.1fs", b - a }'; }

fail_with_log() {  # name message
  say "    FAILED: $2; last lines of $LOGS/$1.log:"
  tail -n 30 "$LOGS/$1.log" 2>/dev/null | sed 's/^/    | /' || true
  exit 1
}

pid_of() { [ -f "$RUN/$1.pid" ] && cat "$RUN/$1.pid" || true; }

is_running() {  # a killed process may linger as a zombie for a moment: that is not running
  local pid state pgid
  pid="$(pid_of "$1")"
  [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null || return 1
  # Our processes lead their own group (setsid): a pid reused by something else is a stale pid file.
  read -r state pgid < <(sed 's/^.*) //' "/proc/$pid/stat" 2>/dev/null | awk '{ print $1, $3 }') || return 1
  [ "$pgid" = "$pid" ] && [ "$state" != Z ] && [ "$state" != X ]
}

# The process groups listening on a TCP port of 127.0.0.1 (empty: nobody listens).
listener_groups() {  # port
  local pid
  for pid in $(ss -Hltnp "sport = :$1" 2>/dev/null | grep -o 'pid=[0-9]*' | cut -d= -f2 | sort -u); do
    sed 's/^.*) //' "/proc/$pid/stat" 2>/dev/null | awk '{ print $3 }'
  done | sort -u
}

# Ready means the port answers and every listener on it is of the process group just started: the
# orphaned workers of a killed function can hold its port for a moment, and they are not the new one.
wait_tcp() {  # name port timeout_s
  local deadline=$(( $(date +%s) + $3 )) pid groups
  pid="$(pid_of "$1")"
  while true; do
    if (exec 3<>"/dev/tcp/127.0.0.1/$2") 2>/dev/null; then
      groups="$(listener_groups "$2")"
      [ -z "$pid" ] || [ "$groups" = "$pid" ] && break
    fi
    if [ "$(date +%s)" -ge "$deadline" ]; then fail_with_log "$1" "port $2 not answered by the new process after $3 s"; fi
    if [ -f "$RUN/$1.pid" ] && ! is_running "$1"; then fail_with_log "$1" "the process exited"; fi
    sleep 0.2
  done
}

# What is left of a service's earlier process group (workers of a killed master) goes before a new start.
reap_leftovers() {  # name
  local pid
  pid="$(pid_of "$1")"
  [ -n "$pid" ] || return 0
  if pgrep -g "$pid" >/dev/null 2>&1; then
    kill -KILL -- "-$pid" 2>/dev/null || true
    for _ in $(seq 1 50); do pgrep -g "$pid" >/dev/null 2>&1 || break; sleep 0.1; done
  fi
  rm -f "$RUN/$1.pid"
}

start_bg() {  # name command...
  local name="$1"; shift
  reap_leftovers "$name"
  [ -f "$LOGS/$name.log" ] && mv -f "$LOGS/$name.log" "$LOGS/$name.log.prev"
  # setsid: the process leads its own group, so stopping it stops its children too.
  setsid "$@" >>"$LOGS/$name.log" 2>&1 </dev/null &
  echo $! >"$RUN/$name.pid"
}

stop_bg() {  # name
  local name="$1" pid
  pid="$(pid_of "$name")"
  if [ -z "$pid" ] || ! is_running "$name"; then
    rm -f "$RUN/$name.pid"; say "==> $name: not running"; return 0
  fi
  kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null || true
  for _ in $(seq 1 75); do
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.2
  done
  if kill -0 "$pid" 2>/dev/null; then kill -KILL -- "-$pid" 2>/dev/null || true; fi
  rm -f "$RUN/$name.pid"
  say "==> $name: stopped"
}

# --- PostgreSQL (runs as the postgres OS user: initdb refuses root) -------------------
PG_BIN="$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)"
PGDATA="$LOCAL/pgdata"
PG_SOCKETS="$RUN/pg"

as_postgres() { runuser -u postgres -- "$@"; }

pg_ready() { as_postgres "$PG_BIN/pg_isready" -q -h "$PG_SOCKETS" -p "$PG_PORT"; }
pg_pid() { head -n 1 "$PGDATA/postmaster.pid" 2>/dev/null || true; }
# The postmaster of postmaster.pid is alive (not a zombie, not a reused pid), ready or not yet.
pg_running() {
  local pid state
  pid="$(pg_pid)"
  [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null || return 1
  state="$(sed 's/^.*) //' "/proc/$pid/stat" 2>/dev/null | awk '{ print $1 }')"
  [ -n "$state" ] && [ "$state" != Z ] && [ "$state" != X ] && grep -qa postgres "/proc/$pid/cmdline" 2>/dev/null
}

start_postgres() {
  id postgres >/dev/null 2>&1 || useradd --system --home-dir /var/lib/postgresql --shell /bin/bash postgres
  # postgres must be able to reach its data directory through every parent.
  local dir="$LOCAL"
  while [ "$dir" != "/" ]; do
    [ -x "$dir" ] && [ "$(stat -c %A "$dir" | cut -c10)" = "x" ] || chmod o+x "$dir"
    dir="$(dirname "$dir")"
  done
  mkdir -p "$PG_SOCKETS"; chown postgres "$PG_SOCKETS"
  touch "$LOGS/postgres.log"; chown postgres "$LOGS/postgres.log"
  if [ ! -s "$PGDATA/PG_VERSION" ]; then
    say "    initialising the database cluster in $PGDATA"
    mkdir -p "$PGDATA"; chown postgres "$PGDATA"; chmod 700 "$PGDATA"
    as_postgres "$PG_BIN/initdb" -D "$PGDATA" -U postgres -E UTF8 --locale=C.UTF-8 \
      --auth-local=trust --auth-host=scram-sha-256 >>"$LOGS/postgres.log"
    cat >>"$PGDATA/postgresql.conf" <<CONF
# easysmart local stack
listen_addresses = '127.0.0.1'
shared_buffers = 512MB
work_mem = 32MB
maintenance_work_mem = 256MB
max_connections = 200
wal_level = minimal
max_wal_senders = 0
max_wal_size = 4GB
checkpoint_timeout = 15min
timezone = 'UTC'
log_min_messages = warning
CONF
  fi
  if pg_running; then  # starting up, or dying: wait until it is one or the other
    local deadline=$(( $(date +%s) + 60 ))
    until pg_ready || ! pg_running; do
      [ "$(date +%s)" -lt "$deadline" ] || fail_with_log postgres "running but not accepting connections after 60 s"
      sleep 0.2
    done
    if pg_running; then ALREADY=1; return; fi
  fi
  # Stale locks (a killed postmaster, maybe still an unreaped zombie): no live postmaster behind them.
  rm -f "$PGDATA/postmaster.pid" "$PG_SOCKETS/.s.PGSQL.$PG_PORT.lock"
  local try
  for try in 1 2 3 4 5 6; do  # a killed postmaster's children may hold its shared memory a moment
    as_postgres "$PG_BIN/pg_ctl" -D "$PGDATA" -l "$LOGS/postgres.log" -w -t 60 \
      -o "-p $PG_PORT -k $PG_SOCKETS" start >/dev/null 2>&1 && break
    [ "$try" -lt 6 ] || fail_with_log postgres "pg_ctl start failed"
    pg_running || rm -f "$PGDATA/postmaster.pid" "$PG_SOCKETS/.s.PGSQL.$PG_PORT.lock"
    sleep 1
  done
  as_postgres psql -q -h "$PG_SOCKETS" -p "$PG_PORT" -U postgres -d postgres -v ON_ERROR_STOP=1 <<SQL >/dev/null
SELECT 'CREATE ROLE esm LOGIN PASSWORD ''esm''' WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'esm') \gexec
-- The integration tests make a database of their own per session (tests/integration/conftest.py).
ALTER ROLE esm CREATEDB;
SELECT 'CREATE DATABASE esm OWNER esm' WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = 'esm') \gexec
SQL
}

stop_postgres() {
  if pg_running; then
    as_postgres "$PG_BIN/pg_ctl" -D "$PGDATA" -m fast -w -t 60 stop >/dev/null
    say "==> postgres: stopped"
  else
    say "==> postgres: not running"
  fi
}

# --- Redis ------------------------------------------------------------------------------
start_redis() {
  mkdir -p "$LOCAL/redis"
  cat >"$LOCAL/redis/redis.conf" <<CONF
bind 127.0.0.1
port $REDIS_PORT
dir $LOCAL/redis
appendonly yes
daemonize no
save ""
CONF
  start_bg redis redis-server "$LOCAL/redis/redis.conf"
  wait_tcp redis "$REDIS_PORT" 30
  local deadline=$(( $(date +%s) + 60 ))  # PONG once the append-only file is loaded
  until [ "$(redis-cli -h 127.0.0.1 -p "$REDIS_PORT" ping 2>/dev/null)" = PONG ]; do
    [ "$(date +%s)" -lt "$deadline" ] || fail_with_log redis "no PONG after 60 s"
    is_running redis || fail_with_log redis "the process exited"
    sleep 0.2
  done
}

# --- Kafka (KRaft, single node) ---------------------------------------------------------
start_kafka() {
  local dir="$LOCAL/kafka"
  mkdir -p "$dir" "$LOCAL/kafka-data"
  cat >"$dir/server.properties" <<CONF
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@127.0.0.1:$KAFKA_CONTROLLER_PORT
listeners=PLAINTEXT://127.0.0.1:$KAFKA_PORT,CONTROLLER://127.0.0.1:$KAFKA_CONTROLLER_PORT
advertised.listeners=PLAINTEXT://127.0.0.1:$KAFKA_PORT
controller.listener.names=CONTROLLER
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT
inter.broker.listener.name=PLAINTEXT
log.dirs=$LOCAL/kafka-data
num.partitions=1
offsets.topic.replication.factor=1
offsets.topic.num.partitions=3
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
min.insync.replicas=1
auto.create.topics.enable=false
group.initial.rebalance.delay.ms=0
log.retention.hours=168
CONF
  cat >"$dir/log4j2.yaml" <<'CONF'
Configuration:
  Appenders:
    Console:
      name: STDOUT
      PatternLayout:
        Pattern: "[%d] %p %m (%c)%n"
  Loggers:
    Root:
      level: WARN
      AppenderRef:
        - ref: STDOUT
    Logger:
      - name: kafka.server.KafkaRaftServer
        level: INFO
CONF
  local java_opts=(-Xms256m -Xmx768m -XX:+UseG1GC -Djava.awt.headless=true
                   "-Dlog4j2.configurationFile=$dir/log4j2.yaml" -cp "$LOCAL/lib/kafka/*")
  if [ ! -f "$LOCAL/kafka-data/meta.properties" ]; then
    [ -s "$dir/cluster-id" ] || .venv/bin/python -c \
      'import base64, uuid; print(base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("="))' >"$dir/cluster-id"
    say "    formatting the KRaft storage"
    java "${java_opts[@]}" kafka.tools.StorageTool format -t "$(cat "$dir/cluster-id")" \
      -c "$dir/server.properties" >>"$LOGS/kafka.log" 2>&1 || fail_with_log kafka "storage format failed"
  fi
  start_bg kafka java "${java_opts[@]}" kafka.Kafka "$dir/server.properties"
  wait_tcp kafka "$KAFKA_PORT" 90
  .venv/bin/python infra/local/ensure_resources.py kafka >>"$LOGS/kafka.log" 2>&1 \
    || fail_with_log kafka "topics could not be created"
}

# --- S3Proxy (filesystem backend) -------------------------------------------------------
start_s3() {
  mkdir -p "$LOCAL/s3-data" "$LOCAL/s3proxy"
  cat >"$LOCAL/s3proxy/s3proxy.conf" <<CONF
s3proxy.endpoint=http://127.0.0.1:$S3_PORT
s3proxy.authorization=aws-v2-or-v4
s3proxy.identity=$S3_ACCESS_KEY_ID
s3proxy.credential=$S3_SECRET_ACCESS_KEY
jclouds.provider=filesystem
jclouds.filesystem.basedir=$LOCAL/s3-data
CONF
  cat >"$LOCAL/s3proxy/logback.xml" <<'CONF'
<configuration>
  <appender name="STDOUT" class="ch.qos.logback.core.ConsoleAppender">
    <encoder><pattern>%d{ISO8601} %-5level %logger{24} - %msg%n</pattern></encoder>
  </appender>
  <root level="WARN"><appender-ref ref="STDOUT"/></root>
</configuration>
CONF
  start_bg s3 java -Xms64m -Xmx256m -Djava.awt.headless=true -Dlogback.configurationFile="$LOCAL/s3proxy/logback.xml" \
    -cp "$LOCAL/lib/s3proxy/*" \
    org.gaul.s3proxy.Main --properties "$LOCAL/s3proxy/s3proxy.conf"
  wait_tcp s3 "$S3_PORT" 60
  .venv/bin/python infra/local/ensure_resources.py s3 >>"$LOGS/s3.log" 2>&1 \
    || fail_with_log s3 "bucket $S3_BUCKET could not be created"
}

# --- The functions and bridges ----------------------------------------------------------
start_function() {  # name
  local name="$1" upper port
  upper="$(echo "$name" | tr a-z A-Z)"
  port="${upper}_PORT"
  if [ ! -f "functions/$name/main.py" ]; then say "==> $name: skipped (functions/$name/main.py does not exist yet)"; return 1; fi
  local workers="${upper}_WORKERS" threads="${upper}_THREADS" metrics="$RUN/metrics/$name"
  # Its workers' metric files (prometheus_client multiprocess mode) start empty with it.
  rm -rf "$metrics" && mkdir -p "$metrics"
  PROMETHEUS_MULTIPROC_DIR="$metrics" WORKERS="${!workers}" THREADS="${!threads}" start_bg "$name" .venv/bin/functions-framework \
    --target=handle --source="functions/$name/main.py" --host=127.0.0.1 --port="${!port}"
  wait_tcp "$name" "${!port}" 60
}

start_bridge() {  # name module
  if [ ! -f "easysmart/bridges/$2.py" ]; then say "==> $1: skipped (easysmart/bridges/$2.py does not exist yet)"; return 1; fi
  start_bg "$1" .venv/bin/python -m "easysmart.bridges.$2"
  sleep 1
  is_running "$1" || fail_with_log "$1" "the bridge exited"
}

# --- Front door (nginx) -----------------------------------------------------------------
start_frontdoor() {
  local dir="$LOCAL/nginx" nginx_bin
  nginx_bin="$(command -v nginx || echo /usr/sbin/nginx)"
  mkdir -p "$dir/tmp"
  # nginx.conf carries the front proxy's secret: readable by its owner only.
  (umask 077; sed -e "s|@FRONTDOOR_PORT@|$FRONTDOOR_PORT|g" -e "s|@AUTH_PORT@|$AUTH_PORT|g" \
      -e "s|@INGEST_PORT@|$INGEST_PORT|g" -e "s|@ANALYTICS_PORT@|$ANALYTICS_PORT|g" -e "s|@ALERTS_PORT@|$ALERTS_PORT|g" \
      -e "s|@NOTIFY_PORT@|$NOTIFY_PORT|g" -e "s|@STREAM_PORT@|$STREAM_PORT|g" \
      -e "s|@ADMIN_PORT@|$ADMIN_PORT|g" -e "s|@PREFIX@|$dir|g" \
      -e "s|@LOGS@|$LOGS|g" -e "s|@FRONT_PROXY_SECRET@|$FRONT_PROXY_SECRET|g" \
      infra/local/nginx.conf.template >"$dir/nginx.conf.new" && mv "$dir/nginx.conf.new" "$dir/nginx.conf")
  "$nginx_bin" -t -q -p "$dir" -c "$dir/nginx.conf" 2>>"$LOGS/frontdoor.log" || fail_with_log frontdoor "invalid nginx config"
  start_bg frontdoor "$nginx_bin" -p "$dir" -c "$dir/nginx.conf" -g 'daemon off;'
  wait_tcp frontdoor "$FRONTDOOR_PORT" 30
}

# --- Prometheus (OBSERVE=1) --------------------------------------------------------------
# Every @NAME@ of the template replaced by the value of $NAME; one that is not set is an error.
render_template() {  # template
  local args=() name
  for name in $(grep -o '@[A-Z_]*@' "$1" | tr -d @ | sort -u); do
    [ -n "${!name:-}" ] || { say "    $1: $name is not set"; return 1; }
    args+=(-e "s|@$name@|${!name}|g")
  done
  sed "${args[@]}" "$1"
}

prometheus_info() {
  say "==> Prometheus: http://127.0.0.1:$PROMETHEUS_PORT (targets /targets, rules /rules, alerts /alerts)"
  say "    dashboard: import infra/observability/dashboard.json into a Grafana (Dashboards > New > Import) and pick"
  say "    a Prometheus data source at that URL; after editing infra/observability/rules.yml: stack.sh restart prometheus"
}

start_prometheus() {
  local dir="$LOCAL/prometheus"
  mkdir -p "$dir/data"
  RULES="$ROOT/infra/observability/rules.yml" render_template infra/observability/prometheus.yml.template \
    >"$dir/prometheus.yml.new" \
    || fail_with_log prometheus "infra/observability/prometheus.yml.template could not be rendered"
  mv "$dir/prometheus.yml.new" "$dir/prometheus.yml"
  promtool check config "$dir/prometheus.yml" >>"$LOGS/prometheus.log" 2>&1 || fail_with_log prometheus "invalid configuration"
  start_bg prometheus "$(command -v prometheus || echo /usr/bin/prometheus)" --config.file="$dir/prometheus.yml" \
    --storage.tsdb.path="$dir/data" --storage.tsdb.retention.time=15d --web.listen-address="127.0.0.1:$PROMETHEUS_PORT"
  wait_tcp prometheus "$PROMETHEUS_PORT" 60
}

# One start or stop of a service at a time (an operator's and the supervisor's).
with_service_lock() {  # name command...
  local name="$1"; shift
  exec {lock_fd}>"$RUN/$name.lock"
  flock "$lock_fd"
  "$@"
  local rc=$?
  flock -u "$lock_fd"; exec {lock_fd}>&-
  return "$rc"
}

running() {  # name: the service's process is alive
  if [ "$1" = postgres ]; then pg_running; else is_running "$1"; fi
}

start_one() {
  local name="$1" started
  started="$(now)"
  ALREADY=0
  if [ "$name" = postgres ]; then
    if pg_running && pg_ready; then say "==> postgres: already running"; return; fi
  elif is_running "$name"; then say "==> $name: already running"; return; fi
  say "==> starting $name"
  case "$name" in
    postgres) start_postgres ;;
    redis) start_redis ;;
    kafka) start_kafka ;;
    s3) start_s3 ;;
    outbox-relay) start_bridge outbox-relay outbox_relay || return 0 ;;
    kafka-bridge) start_bridge kafka-bridge kafka_source || return 0 ;;
    ping-bridge) start_bridge ping-bridge ping_source || return 0 ;;
    frontdoor) start_frontdoor ;;
    prometheus) start_prometheus ;;
    *)
      if [[ "$FUNCTIONS" == *" $name "* ]]; then start_function "$name" || return 0
      else say "unknown service: $name"; exit 2; fi ;;
  esac
  if [ "$ALREADY" = 1 ]; then say "    $name: already running"; else say "    $name ready ($(since "$started"))"; fi
}

stop_one() {
  rm -f "$RUN/$1.armed"  # before stopping, so the supervisor does not bring it back
  case "$1" in
    postgres) stop_postgres ;;
    *) stop_bg "$1" ;;
  esac
}

arm() { touch "$RUN/$1.armed"; }

log_supervisor() {  # event service detail
  printf '{"time":"%s","service":"%s","event":"%s",%s}\n' "$(date -u +%FT%T.%3NZ)" "$2" "$1" "$3"
}

# Restarts armed services that died; a service that keeps dying waits 1, 2, 4 ... SUPERVISE_MAX_DELAY_S
# seconds between tries, and its delay starts again at 1 s once it has stayed up that long.
supervise() {
  declare -A delay next_try up_since
  local name t
  log_supervisor started supervisor '"interval_s":'"$SUPERVISE_INTERVAL_S"
  while true; do
    t="$(date +%s)"
    for name in "${ALL[@]}"; do
      [ -f "$RUN/$name.armed" ] || { delay[$name]=1; continue; }
      if running "$name"; then
        [ -n "${up_since[$name]:-}" ] || up_since[$name]="$t"
        if (( t - ${up_since[$name]} >= SUPERVISE_MAX_DELAY_S )); then delay[$name]=1; fi
        continue
      fi
      up_since[$name]=""
      (( t >= ${next_try[$name]:-0} )) || continue
      log_supervisor restarting "$name" '"delay_s":'"${delay[$name]:-1}"
      if ( with_service_lock "$name" start_one "$name" ) >>"$LOGS/supervisor.log" 2>&1; then
        log_supervisor restarted "$name" '"ok":true'
      else
        log_supervisor restart_failed "$name" '"ok":false'
      fi
      next_try[$name]=$(( t + ${delay[$name]:-1} ))
      delay[$name]=$(( ${delay[$name]:-1} * 2 > SUPERVISE_MAX_DELAY_S ? SUPERVISE_MAX_DELAY_S : ${delay[$name]:-1} * 2 ))
    done
    sleep "$SUPERVISE_INTERVAL_S"
  done
}

ensure_supervisor() {
  is_running supervisor && return 0
  start_bg supervisor bash "$ROOT/infra/local/stack.sh" supervise
  say "==> supervisor: watching the started services (log: $LOGS/supervisor.log)"
}

port_of() {
  case "$1" in
    postgres) echo "$PG_PORT" ;; redis) echo "$REDIS_PORT" ;; kafka) echo "$KAFKA_PORT" ;; s3) echo "$S3_PORT" ;;
    frontdoor) echo "$FRONTDOOR_PORT" ;; outbox-relay|kafka-bridge|ping-bridge) echo - ;;
    *) local var; var="$(echo "$1" | tr a-z A-Z)_PORT"; echo "${!var}" ;;
  esac
}

status() {
  local name pid
  for name in "${ALL[@]}"; do
    if [ "$name" = postgres ]; then
      if pg_running; then pid="$(pg_pid)"; else pid=""; fi
    elif is_running "$name"; then pid="$(pid_of "$name")"; else pid=""; fi
    if [ -n "$pid" ]; then
      printf '%-13s running  pid %-8s port %s\n' "$name" "$pid" "$(port_of "$name")"
    else
      printf '%-13s stopped  %-12s port %s\n' "$name" "" "$(port_of "$name")"
    fi
  done
}

command="${1:-status}"; shift || true
case "$command" in
  start)
    services=("$@")
    if ! ((${#services[@]})); then
      for name in "${ALL[@]}"; do
        [[ "$OPTIONAL" == *" $name "* && "${OBSERVE:-0}" != 1 ]] || services+=("$name")
      done
    fi
    for name in "${services[@]}"; do with_service_lock "$name" start_one "$name"; arm "$name"; done
    ensure_supervisor
    if [[ " ${services[*]} " == *" prometheus "* ]]; then prometheus_info; fi ;;
  stop)
    services=("$@")
    if ! ((${#services[@]})); then
      stop_bg supervisor
      for ((i=${#ALL[@]}-1; i>=0; i--)); do services+=("${ALL[$i]}"); done
    fi
    for name in "${services[@]}"; do with_service_lock "$name" stop_one "$name"; done ;;
  restart)
    for name in "$@"; do with_service_lock "$name" stop_one "$name"; with_service_lock "$name" start_one "$name"; arm "$name"; done
    ensure_supervisor ;;
  supervise) supervise ;;
  prometheus-info) prometheus_info ;;
  status) status; if is_running supervisor; then say "supervisor    running  pid $(pid_of supervisor)"; else say "supervisor    stopped"; fi ;;
  *) say "usage: $0 start|stop|restart|status [service...]"; exit 2 ;;
esac
