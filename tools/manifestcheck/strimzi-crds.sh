#!/usr/bin/env bash
# Generates the CRDs of the pinned Strimzi release (tools/manifestcheck/strimzi/pom.xml) into
# OUT_DIR with Strimzi's own generator (io.strimzi.crdgenerator.CrdGenerator, run with the
# arguments of io.strimzi:api's build for kafka.strimzi.io/v1). Idempotent: skips when done.
# Needs Maven and a Java >= 21 runtime (Strimzi 1.x classes); finds one under /usr/lib/jvm.
set -euo pipefail
OUT_DIR=${1:?usage: strimzi-crds.sh OUT_DIR [MAVEN_REPO]}
M2=${2:-$HOME/.m2/repository}
HERE=$(cd "$(dirname "$0")" && pwd)
STAMP="$OUT_DIR/.done-$(cat "$HERE/strimzi/pom.xml" "$HERE/strimzi-crds.sh" | sha256sum | cut -c1-16)"
[ -f "$STAMP" ] && exit 0

java_major() { "$1" -XshowSettings:properties -version 2>&1 | sed -n 's/^ *java.specification.version = //p'; }
JAVA=""
for candidate in "${JAVA_HOME:+$JAVA_HOME/bin/java}" "$(command -v java || true)" /usr/lib/jvm/*/bin/java; do
  [ -n "$candidate" ] && [ -x "$candidate" ] || continue
  if [ "$(java_major "$candidate")" -ge 21 ] 2>/dev/null; then JAVA=$candidate; break; fi
done
[ -n "$JAVA" ] || { echo "strimzi-crds.sh: no Java >= 21 runtime found (JAVA_HOME, PATH, /usr/lib/jvm)" >&2; exit 1; }

mkdir -p "$OUT_DIR"
CP="$OUT_DIR/classpath.txt"
mvn -B -q -Dstyle.color=never -f "$HERE/strimzi/pom.xml" -Dmaven.repo.local="$M2" \
  dependency:build-classpath -Dmdep.outputFile="$CP" >"$OUT_DIR/mvn.log" 2>&1 \
  || { cat "$OUT_DIR/mvn.log" >&2; exit 1; }
rm -f "$OUT_DIR"/*.yaml
"$JAVA" -cp "$(cat "$CP")" io.strimzi.crdgenerator.CrdGenerator \
  --label app:strimzi --label strimzi.io/crd-install:true \
  --target-kube 1.16+ --crd-api-version v1 --api-versions v1 --storage-version v1 --yaml \
  io.strimzi.api.kafka.model.kafka.Kafka="$OUT_DIR/040-Crd-kafka.yaml" \
  io.strimzi.api.kafka.model.topic.KafkaTopic="$OUT_DIR/043-Crd-kafkatopic.yaml" \
  io.strimzi.api.kafka.model.user.KafkaUser="$OUT_DIR/044-Crd-kafkauser.yaml" \
  io.strimzi.api.kafka.model.nodepool.KafkaNodePool="$OUT_DIR/045-Crd-kafkanodepool.yaml" >&2
touch "$STAMP"
