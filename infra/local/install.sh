#!/usr/bin/env bash
# Installs what the local stack needs, idempotently: Debian packages (PostgreSQL, Redis, nginx, Prometheus),
# the Python virtual environment with the project, and the Kafka and S3Proxy jars (Maven Central).
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
cd "$ROOT"
step() { printf '==> %s\n' "$*"; }

missing=()
command -v redis-server >/dev/null || missing+=(redis-server)
command -v nginx >/dev/null || [ -x /usr/sbin/nginx ] || missing+=(nginx-light)
ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || missing+=(postgresql)
command -v psql >/dev/null || missing+=(postgresql-client)
command -v java >/dev/null || missing+=(openjdk-17-jre-headless)
python3 -c 'import ensurepip, venv' 2>/dev/null || missing+=(python3-venv)
command -v mvn >/dev/null || missing+=(maven)
command -v ss >/dev/null || missing+=(iproute2)      # stack.sh: which process answers on a port
command -v flock >/dev/null || missing+=(util-linux) # stack.sh: one start/stop of a service at a time
# promtool checks the alerting rules and dashboard queries (make check-manifests); prometheus runs with OBSERVE=1.
command -v promtool >/dev/null || missing+=(prometheus)
if ((${#missing[@]})); then
  step "installing Debian packages: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  # The packages start system-wide services; the project runs its own instances.
  for service in nginx redis-server postgresql prometheus; do
    if command -v systemctl >/dev/null && systemctl is-active --quiet "$service" 2>/dev/null; then systemctl stop "$service" || true; fi
    if command -v service >/dev/null; then service "$service" stop >/dev/null 2>&1 || true; fi
  done
  # Debian's Prometheus would take port 9090 at every boot: the stack starts its own (make up OBSERVE=1).
  if command -v systemctl >/dev/null && [ -d /run/systemd/system ]; then systemctl disable --quiet prometheus 2>/dev/null || true; fi
else
  step "Debian packages present (postgresql, redis-server, nginx, java, maven, prometheus)"
fi

if [ ! -f pyproject.toml ]; then
  [ -x .venv/bin/python ] || { step "creating the Python virtual environment (.venv)"; python3 -m venv .venv; }
  step "no pyproject.toml yet: skipping the project install"
elif stamp=.venv/.installed-$(sha256sum pyproject.toml | cut -c1-16); [ ! -f "$stamp" ]; then
  step "creating the Python virtual environment (.venv) and installing the project"
  [ -x .venv/bin/python ] || python3 -m venv .venv
  .venv/bin/pip install -q --upgrade pip >/dev/null
  .venv/bin/pip install -q -e '.[dev]'
  rm -f .venv/.installed-*
  touch "$stamp"
else
  step "Python environment up to date"
fi

resolve_jars() {  # name pom marker service
  local dir=".local/lib/$1"
  if ! ls "$dir"/$3 >/dev/null 2>&1; then
    step "resolving $1 jars with Maven into $dir (first run or new version)"
    local started=$SECONDS log=".local/log/maven-$1.log"
    # A process still running on the old jars would break when they go: stop it (stack.sh start restarts it).
    if [ -s ".local/run/$4.pid" ]; then bash infra/local/stack.sh stop "$4"; fi
    rm -rf "$dir"; mkdir -p "$dir" .local/log  # no jars of an older version left on the classpath
    if ! mvn -B -Dstyle.color=never -f "infra/local/jars/$2" dependency:copy-dependencies \
        -DoutputDirectory="$ROOT/$dir" -DincludeScope=runtime >"$log" 2>&1; then
      tail -n 40 "$log"; rm -rf "$dir"; echo "==> FAILED: Maven could not resolve the $1 jars (see $log)"; exit 1
    fi
    step "$1 jars resolved ($(ls "$dir" | wc -l) jars, $((SECONDS - started))s)"
  else
    step "$1 jars present"
  fi
}
resolve_jars kafka kafka-pom.xml 'kafka_2.13-4.1.1.jar' kafka
resolve_jars s3proxy s3proxy-pom.xml 's3proxy-4.1.0.jar' s3
