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

# The overlay's Secret carries a placeholder claim-signing key the functions refuse; this sets a generated one,
# made once and kept in .local/secrets (never committed), so a second deploy keeps verifying earlier claim checks.
set_claim_signing_key() {
  local file=.local/secrets/kind-claim-signing-key
  mkdir -p .local/secrets
  [ -s "$file" ] || (umask 077; head -c 48 /dev/urandom | base64 -w0 > "$file")
  kubectl -n easysmart patch secret easysmart-secrets --type merge \
    -p "{\"stringData\":{\"CLAIM_SIGNING_KEY\":\"$(cat "$file")\"}}" >/dev/null
}

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
  export DATABASE_URL=postgresql://esm:esm-kind@127.0.0.1:55439/esm DB_MODE=timescaledb
  step "seeding the demo tenant and accounts"
  .venv/bin/esm seed-demo
  step "sample upload through $base_url and read back"
  ESM_BASE_URL="$base_url" .venv/bin/esm demo
}
