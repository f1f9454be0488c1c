# Shared by kind-up.sh and openfaas-deploy.sh: pinned releases and the steps both need.
# Needs docker, kind, kubectl (and helm, faas-cli for OpenFaaS) on PATH.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../../.."

KIND_CLUSTER=${KIND_CLUSTER:-easysmart}
# One Knative minor for every component: 1.15 (the release whose schemas make check-manifests uses).
KNATIVE_SERVING_VERSION=${KNATIVE_SERVING_VERSION:-knative-v1.15.2}
KNATIVE_KOURIER_VERSION=${KNATIVE_KOURIER_VERSION:-knative-v1.15.0}
KNATIVE_EVENTING_VERSION=${KNATIVE_EVENTING_VERSION:-knative-v1.15.2}
KNATIVE_KAFKA_VERSION=${KNATIVE_KAFKA_VERSION:-knative-v1.15.0}
STRIMZI_VERSION=${STRIMZI_VERSION:-1.2.0}
VERSION=${VERSION:-$(sed -n 's/^version *= *"\(.*\)"/\1/p' pyproject.toml | head -1)}
FUNCTIONS=$(for m in functions/*/main.py; do basename "$(dirname "$m")"; done)

step() { printf '==> %s\n' "$*"; }
need() { for c in "$@"; do command -v "$c" >/dev/null || { echo "missing command: $c" >&2; exit 1; }; done; }

ensure_cluster() {
  if ! kind get clusters 2>/dev/null | grep -qx "$KIND_CLUSTER"; then
    step "creating the kind cluster $KIND_CLUSTER (infra/kind-config.yaml)"
    kind create cluster --name "$KIND_CLUSTER" --config infra/kind-config.yaml --wait 120s
  fi
  kubectl config use-context "kind-$KIND_CLUSTER" >/dev/null
}

# docker build + kind load for every functions/<name>/ (tags dev.local/<name>:<version>).
build_images() {
  for f in $FUNCTIONS; do
    step "building dev.local/$f:$VERSION"
    docker build --build-arg FUNCTION="$f" -t "dev.local/$f:$VERSION" .
    kind load docker-image --name "$KIND_CLUSTER" "dev.local/$f:$VERSION"
  done
}

install_strimzi() {
  step "Strimzi $STRIMZI_VERSION (cluster operator watching namespace kafka)"
  kubectl create namespace kafka --dry-run=client -o yaml | kubectl apply -f -
  curl -fsSL "https://github.com/strimzi/strimzi-kafka-operator/releases/download/$STRIMZI_VERSION/strimzi-cluster-operator-$STRIMZI_VERSION.yaml" \
    | sed 's/namespace: .*/namespace: kafka/' | kubectl apply -n kafka -f -
  kubectl -n kafka rollout status deployment/strimzi-cluster-operator --timeout=300s
}

# The Secret easysmart-secrets is never committed: random values on the first deploy, the same
# ones on every later deploy (TimescaleDB keeps the password it was initialised with, and tokens
# stay valid). A key added to the list is generated on the next deploy.
GENERATED_SECRETS="POSTGRES_PASSWORD S3_ACCESS_KEY_ID S3_SECRET_ACCESS_KEY JWT_SECRET FRONT_PROXY_SECRET CLAIM_SIGNING_KEY"

secret_value() {  # key: its value in easysmart-secrets, empty when there is none
  kubectl -n easysmart get secret easysmart-secrets -o "jsonpath={.data.$1}" 2>/dev/null | base64 -d || true
}

ensure_secrets() {
  step "Secret easysmart-secrets (generated once, kept on re-deploy)"
  kubectl create namespace easysmart --dry-run=client -o yaml | kubectl apply -f -
  local -A value
  local key
  for key in $GENERATED_SECRETS; do
    value[$key]=$(secret_value "$key")
    [ -n "${value[$key]}" ] || value[$key]=$(head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n')
  done
  local args=()
  for key in $GENERATED_SECRETS; do args+=("--from-literal=$key=${value[$key]}"); done
  kubectl -n easysmart create secret generic easysmart-secrets "${args[@]}" \
    --from-literal=DATABASE_URL="postgresql://esm:${value[POSTGRES_PASSWORD]}@timescaledb.easysmart.svc.cluster.local:5432/esm" \
    --from-literal=REDIS_URL=redis://redis.easysmart.svc.cluster.local:6379/0 \
    --dry-run=client -o yaml | kubectl apply -f -
}

wait_backing() {
  step "waiting for Kafka, TimescaleDB, Redis, S3 and the migration"
  kubectl -n kafka wait kafka/esm-kafka --for=condition=Ready --timeout=900s
  kubectl -n kafka wait kafkatopic --all --for=condition=Ready --timeout=300s
  kubectl -n easysmart rollout status statefulset/timescaledb --timeout=600s
  kubectl -n easysmart rollout status deployment/redis --timeout=300s
  kubectl -n easysmart rollout status deployment/s3 --timeout=300s
  kubectl -n easysmart wait job/migrate --for=condition=Complete --timeout=900s
}

# Seeds the demo accounts through a port-forward to TimescaleDB, then `esm demo` sends a sample
# upload through the public URL and reads it back.
smoke_test() {
  local base_url=$1 pf
  [ -x .venv/bin/esm ] || make install
  kubectl -n easysmart port-forward svc/timescaledb 55439:5432 >/dev/null 2>&1 & pf=$!
  trap 'kill $pf 2>/dev/null || true' RETURN
  sleep 3
  DATABASE_URL="postgresql://esm:$(secret_value POSTGRES_PASSWORD)@127.0.0.1:55439/esm" DB_MODE=timescaledb
  export DATABASE_URL DB_MODE
  step "seeding the demo tenant and accounts"
  .venv/bin/esm seed-demo
  step "sample upload through $base_url and read back"
  ESM_BASE_URL="$base_url" .venv/bin/esm demo
}
