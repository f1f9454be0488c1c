#!/usr/bin/env bash
# make openfaas-deploy: OpenFaaS Community Edition and the cron-connector (helm) on the kind
# cluster, the backing services of infra/k8s/backing, the images, stack.yml (faas-cli) and the
# kafka-source bridge and the outbox relay; then a sample upload through the gateway read back.
source "$(dirname "$0")/common.sh"
need docker kind kubectl helm faas-cli curl
ensure_cluster
GATEWAY_PORT=${GATEWAY_PORT:-8081}

step "OpenFaaS CE and the cron-connector (helm chart repository openfaas)"
kubectl create namespace openfaas --dry-run=client -o yaml | kubectl apply -f -
kubectl create namespace openfaas-fn --dry-run=client -o yaml | kubectl apply -f -
helm repo add openfaas https://openfaas.github.io/faas-netes/ >/dev/null
helm repo update openfaas >/dev/null
# IfNotPresent: the images are loaded into the kind node, not pulled.
helm upgrade --install openfaas openfaas/openfaas --namespace openfaas \
  --set functionNamespace=openfaas-fn --set generateBasicAuth=true \
  --set faasnetes.imagePullPolicy=IfNotPresent --wait
helm upgrade --install cron-connector openfaas/cron-connector --namespace openfaas --wait

install_strimzi
ensure_secrets
step "backing services (infra/k8s/backing)"
kubectl apply -k infra/k8s/backing
build_images
wait_backing

step "stack.yml through the gateway on 127.0.0.1:$GATEWAY_PORT"
kubectl -n openfaas rollout status deployment/gateway --timeout=300s
kubectl -n openfaas port-forward svc/gateway "$GATEWAY_PORT":8080 >/dev/null 2>&1 & pf=$!
trap 'kill $pf 2>/dev/null || true' EXIT
sleep 3
export OPENFAAS_URL=http://127.0.0.1:$GATEWAY_PORT
kubectl -n openfaas get secret basic-auth -o jsonpath='{.data.basic-auth-password}' | base64 -d \
  | faas-cli login --gateway "$OPENFAAS_URL" --username admin --password-stdin
# The functions' secrets, substituted into stack.yml by faas-cli (same values as the Secret).
# FRONT_PROXY_SECRET is for a front proxy of yours in front of the gateway (docs/deploy.md); without
# one no request carries it, and the functions take the gateway's address as the client's.
for k in DATABASE_URL REDIS_URL S3_ACCESS_KEY_ID S3_SECRET_ACCESS_KEY JWT_SECRET FRONT_PROXY_SECRET CLAIM_SIGNING_KEY; do
  export "$k=$(secret_value "$k")"
done
faas-cli deploy -f stack.yml --gateway "$OPENFAAS_URL"
# The outbox relay is a Deployment beside the functions: its database URL as a Secret of its namespace.
kubectl -n openfaas-fn create secret generic outbox-relay --from-literal=DATABASE_URL="$DATABASE_URL" \
  --dry-run=client -o yaml | kubectl apply -f -
kubectl apply -k infra/k8s/openfaas
kubectl -n openfaas-fn rollout status deployment/kafka-source-bridge --timeout=300s
kubectl -n openfaas-fn rollout status deployment/ping-source-bridge --timeout=300s
kubectl -n openfaas-fn rollout status deployment/outbox-relay --timeout=300s
for f in $FUNCTIONS; do kubectl -n openfaas-fn rollout status deployment/"$f" --timeout=300s; done

# The gateway serves /function/<name>/<path>: ingest and auth see /api/v1/... unchanged.
curl -fsS "$OPENFAAS_URL/function/ingest/api/v1/health" && echo
step "deployed: gateway $OPENFAAS_URL (port-forward ends with this script; kubectl -n openfaas port-forward svc/gateway $GATEWAY_PORT:8080)"
