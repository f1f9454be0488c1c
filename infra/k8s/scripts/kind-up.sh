#!/usr/bin/env bash
# make kind-up: a kind cluster with Knative Serving (Kourier), Eventing, the Kafka source and
# sink, Strimzi; the function images; the kind overlay; then a sample upload through the front
# proxy (http://127.0.0.1:8080) read back.
source "$(dirname "$0")/common.sh"
need docker kind kubectl curl
ensure_cluster

step "Knative Serving $KNATIVE_SERVING_VERSION with Kourier $KNATIVE_KOURIER_VERSION"
kubectl apply -f "https://github.com/knative/serving/releases/download/$KNATIVE_SERVING_VERSION/serving-crds.yaml"
kubectl wait --for=condition=Established --timeout=120s crd/services.serving.knative.dev
kubectl apply -f "https://github.com/knative/serving/releases/download/$KNATIVE_SERVING_VERSION/serving-core.yaml"
kubectl apply -f "https://github.com/knative/net-kourier/releases/download/$KNATIVE_KOURIER_VERSION/kourier.yaml"
kubectl patch configmap/config-network -n knative-serving --type merge \
  -p '{"data":{"ingress-class":"kourier.ingress.networking.knative.dev"}}'

step "Knative Eventing $KNATIVE_EVENTING_VERSION, Kafka source and sink $KNATIVE_KAFKA_VERSION"
kubectl apply -f "https://github.com/knative/eventing/releases/download/$KNATIVE_EVENTING_VERSION/eventing-crds.yaml"
kubectl wait --for=condition=Established --timeout=120s crd/pingsources.sources.knative.dev
kubectl apply -f "https://github.com/knative/eventing/releases/download/$KNATIVE_EVENTING_VERSION/eventing-core.yaml"
for f in eventing-kafka-controller eventing-kafka-source eventing-kafka-sink; do
  kubectl apply -f "https://github.com/knative-extensions/eventing-kafka-broker/releases/download/$KNATIVE_KAFKA_VERSION/$f.yaml"
done
kubectl wait --for=condition=Established --timeout=120s crd/kafkasources.sources.knative.dev crd/kafkasinks.eventing.knative.dev
for ns in knative-serving kourier-system knative-eventing; do
  kubectl -n "$ns" wait deployment --all --for=condition=Available --timeout=600s
done

install_strimzi
build_images

ensure_secrets
step "applying infra/k8s/overlays/kind"
kubectl apply -k infra/k8s/overlays/kind
wait_backing
for f in $FUNCTIONS; do
  kubectl -n easysmart wait ksvc/"$f" --for=condition=Ready --timeout=600s
done
kubectl -n easysmart rollout status deployment/frontproxy --timeout=300s
kubectl -n easysmart wait kafkasource/telemetry-raw-to-process kafkasink/telemetry-dlq --for=condition=Ready --timeout=600s

smoke_test http://127.0.0.1:8080
step "up: public API on http://127.0.0.1:8080 (make kind-down removes the cluster)"
