#!/usr/bin/env bash
# Installs what the local stack needs, idempotently: Debian packages (PostgreSQL, Redis, nginx),
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
command -v mvn >/dev/null || missing+=(maven)
if ((${#missing[@]})); then
  step "installing Debian packages: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  # The packages start system-wide services; the project runs its own instances.
  for service in nginx redis-server postgresql; do
    if command -v systemctl >/dev/null && systemctl is-active --quiet "$service" 2>/dev/null; then systemctl stop "$service" || true; fi
    if command -v service >/dev/null; then service "$service" stop >/dev/null 2>&1 || true; fi
  done
else
  step "Debian packages present (postgresql, redis-server, nginx, java, maven)"
fi

stamp=.venv/.installed-$(sha256sum pyproject.toml | cut -c1-16)
if [ ! -f "$stamp" ]; then
  step "creating the Python virtual environment (.venv) and installing the project"
  [ -x .venv/bin/python ] || python3 -m venv .venv
  .venv/bin/pip install -q --upgrade pip >/dev/null
  .venv/bin/pip install -q -e '.[dev]'
  rm -f .venv/.installed-*
  touch "$stamp"
else
  step "Python environment up to date"
fi

resolve_jars() {  # name pom marker
  local dir=".local/lib/$1"
  if ! ls "$dir"/$3 >/dev/null 2>&1; then
    step "resolving $1 jars with Maven (first run only)"
    mkdir -p "$dir"
    mvn -q -B -Dstyle.color=never -f "infra/local/jars/$2" dependency:copy-dependencies -DoutputDirectory="$ROOT/$dir" -DincludeScope=runtime
  else
    step "$1 jars present"
  fi
}
resolve_jars kafka kafka-pom.xml 'slf4j-api-2.0.16.jar'
resolve_jars s3proxy s3proxy-pom.xml 's3proxy-2.6.0.jar'
