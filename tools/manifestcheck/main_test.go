package main

// Negative tests: each check must be able to fail. Every case copies the files the checker
// reads into a temporary tree, breaks one thing, and expects that exact thing to be reported.
// The schemas are loaded once; STRIMZI_CRDS names the generated Strimzi CRDs and PYTHON the
// interpreter that answers `esm config vars` (make check-manifests sets both).

import (
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

var schemas *Schemas

func repoRoot() string {
	if r := os.Getenv("REPO_ROOT"); r != "" {
		return r
	}
	return "../.."
}

func python() string {
	if p := os.Getenv("PYTHON"); p != "" {
		return p
	}
	return filepath.Join(repoRoot(), ".venv", "bin", "python")
}

func run(root string) *Report {
	return Run(Options{Repo: root, Python: python()}, schemas)
}

func TestMain(m *testing.M) {
	dir := os.Getenv("STRIMZI_CRDS")
	if dir == "" {
		dir = filepath.Join(repoRoot(), ".local", "manifestcheck", "strimzi")
	}
	var err error
	schemas, err = LoadSchemas(Options{StrimziCRDs: dir})
	if err != nil {
		println("loading schemas:", err.Error())
		os.Exit(2)
	}
	os.Exit(m.Run())
}

// copyTree copies what the checker reads: infra/, stack.yml, Dockerfile, pyproject.toml, the
// package's Python files and the functions' main.py files.
func copyTree(t *testing.T) string {
	t.Helper()
	src, dst := repoRoot(), t.TempDir()
	copyFile := func(rel string) {
		data, err := os.ReadFile(filepath.Join(src, rel))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.MkdirAll(filepath.Dir(filepath.Join(dst, rel)), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dst, rel), data, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	for _, f := range []string{"stack.yml", "Dockerfile", "pyproject.toml"} {
		copyFile(f)
	}
	packageFiles, _ := filepath.Glob(filepath.Join(src, "easysmart", "*.py"))
	bridgeFiles, _ := filepath.Glob(filepath.Join(src, "easysmart", "bridges", "*.py"))
	for _, p := range append(packageFiles, bridgeFiles...) {
		rel, _ := filepath.Rel(src, p)
		copyFile(rel)
	}
	mains, _ := filepath.Glob(filepath.Join(src, "functions", "*", "main.py"))
	for _, m := range mains {
		rel, _ := filepath.Rel(src, m)
		copyFile(rel)
	}
	err := filepath.WalkDir(filepath.Join(src, "infra"), func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		rel, _ := filepath.Rel(src, p)
		if strings.HasPrefix(rel, filepath.Join("infra", "local", "jars")) {
			return nil
		}
		copyFile(rel)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return dst
}

func mutate(t *testing.T, root, rel, old, new string) {
	t.Helper()
	p := filepath.Join(root, rel)
	data, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(data), old) {
		t.Fatalf("%s does not contain %q", rel, old)
	}
	if err := os.WriteFile(p, []byte(strings.Replace(string(data), old, new, 1)), 0o644); err != nil {
		t.Fatal(err)
	}
}

func TestRepositoryPasses(t *testing.T) {
	r := run(repoRoot())
	if len(r.Errors) > 0 {
		t.Fatalf("the repository's manifests fail:\n%s", r)
	}
}

const (
	ingest     = "infra/k8s/base/functions/ingest.yaml"
	process    = "infra/k8s/base/functions/process.yaml"
	source     = "infra/k8s/base/eventing/kafkasource-process.yaml"
	sink       = "infra/k8s/base/eventing/kafkasink-dlq.yaml"
	pings      = "infra/k8s/base/eventing/pingsources-retention.yaml"
	kafka      = "infra/k8s/backing/kafka/kafka.yaml"
	topics     = "infra/k8s/backing/kafka/topics.yaml"
	redis      = "infra/k8s/backing/redis/redis.yaml"
	proxy      = "infra/k8s/base/frontproxy/frontproxy.yaml"
	bridge     = "infra/k8s/openfaas/kafka-source-bridge.yaml"
	stackYML   = "stack.yml"
	alerting   = "infra/k8s/base/eventing/kafkasources-alerting.yaml"
	ticks      = "infra/k8s/base/eventing/pingsources-alerting.yaml"
	relay      = "infra/k8s/base/relay/outbox-relay.yaml"
	localEnv   = "infra/local/local.env"
	faasKust   = "infra/k8s/openfaas/kustomization.yaml"
	streamKsvc = "infra/k8s/base/functions/stream.yaml"
)

// analytics's main.py made to read KafkaSettings too.
var readsKafka = [2]string{"    database, timeouts = DatabaseSettings.from_env(), AnalyticsDatabaseTimeouts.from_env()\n", "    from easysmart.config import KafkaSettings\n    KafkaSettings.from_env()\n    database, timeouts = DatabaseSettings.from_env(), AnalyticsDatabaseTimeouts.from_env()\n"}

func TestEachCheckCanFail(t *testing.T) {
	cases := []struct {
		name      string
		file      string
		old, new  string
		fragments []string // all must appear in one reported error
	}{
		// Knative Serving: strict decoding, Validate, CRD schema.
		{"ksvc misspelled field", ingest, "containerConcurrency: 16", "containerConcurency: 16", []string{"Service easysmart/ingest", "unknown field", "containerConcurency"}},
		{"ksvc wrong case field", ingest, "timeoutSeconds: 300", "TimeoutSeconds: 300", []string{"Service easysmart/ingest", "TimeoutSeconds"}},
		{"ksvc wrong apiVersion", ingest, "apiVersion: serving.knative.dev/v1", "apiVersion: serving.knative.dev/v2", []string{"unknown apiVersion/kind serving.knative.dev/v2/Service"}},
		{"ksvc timeout over the maximum", ingest, "timeoutSeconds: 300", "timeoutSeconds: 3600", []string{"Knative Serving validation", "timeoutSeconds"}},
		{"ksvc concurrency over the maximum", process, "containerConcurrency: 2", "containerConcurrency: 5000", []string{"Knative Serving validation", "containerConcurrency"}},
		{"ksvc invalid autoscaling annotation", ingest, `autoscaling.knative.dev/target: "12"`, `autoscaling.knative.dev/target: "twelve"`, []string{"Knative Serving validation", "autoscaling.knative.dev/target"}},
		{"ksvc cluster-local removed", process, "networking.knative.dev/visibility: cluster-local", "app.kubernetes.io/component: worker", []string{"process is publicly routable"}},
		{"function behind the front proxy made public", ingest, "    networking.knative.dev/visibility: cluster-local\n", "", []string{"Service easysmart/ingest", "ingest is publicly routable"}},
		{"ksvc concurrency differs from gunicorn", ingest, `value: "8"`, `value: "4"`, []string{"containerConcurrency 16 must equal WORKERS x THREADS = 8"}},
		// Knative Eventing: PingSource Validate, duck types, Kafka CRD schemas.
		{"pingsource bad schedule", pings, `schedule: "17 3 * * *"`, `schedule: "17 3 * *"`, []string{"PingSource easysmart/retention-expire", "schedule"}},
		{"pingsource unknown retention job", pings, `data: '{"job": "expire"}'`, `data: '{"job": "purge"}'`, []string{"PingSource easysmart/retention-expire", "must be {\"job\": one of"}},
		{"pingsource misspelled field", pings, "contentType: application/json", "contentTyp: application/json", []string{"PingSource", "unknown field", "contentTyp"}},
		{"kafkasource bad backoff policy", source, "backoffPolicy: exponential", "backoffPolicy: exponentional", []string{"KafkaSource", "backoffPolicy"}},
		{"kafkasource misspelled field", source, "initialOffset: earliest", "initialOfset: earliest", []string{"KafkaSource", "unknown field", "initialOfset"}},
		{"kafkasource v1 is not served by Knative 1.15", source, "apiVersion: sources.knative.dev/v1beta1", "apiVersion: sources.knative.dev/v1", []string{"unknown apiVersion/kind sources.knative.dev/v1/KafkaSource"}},
		{"kafkasource dead letter sink only", source, "retry: 12", "# no retry", []string{"delivery.retry must be > 0"}},
		{"kafkasource unknown topic", source, "- telemetry.raw", "- telemetry.rawx", []string{"topic \"telemetry.rawx\" has no KafkaTopic"}},
		{"kafkasource sink names no service", source, "name: process", "name: processor", []string{"sink Service easysmart/processor"}},
		{"kafkasink bad enum", sink, "contentMode: structured", "contentMode: json", []string{"KafkaSink", "contentMode", "json"}},
		{"kafkasink misspelled field", sink, "topic: telemetry.dlq", "topik: telemetry.dlq", []string{"KafkaSink", "unknown field", "topik"}},
		// Strimzi.
		{"kafkatopic misspelled field", topics, "partitions: 6", "partitons: 6", []string{"KafkaTopic kafka/telemetry-raw", "unknown field", "partitons"}},
		{"kafka bad listener type", kafka, "type: internal", "type: intranet", []string{"Kafka kafka/esm-kafka", "type", "intranet"}},
		{"kafka wrong apiVersion", kafka, "apiVersion: kafka.strimzi.io/v1\nkind: Kafka\n", "apiVersion: kafka.strimzi.io/v1beta3\nkind: Kafka\n", []string{"unknown apiVersion/kind kafka.strimzi.io/v1beta3/Kafka"}},
		{"kafkatopic names no cluster", topics, "strimzi.io/cluster: esm-kafka", "strimzi.io/cluster: other-kafka", []string{"names no Kafka"}},
		// Kubernetes core types.
		{"deployment misspelled field", redis, "replicas: 1", "replica: 1", []string{"Deployment easysmart/redis", "unknown field", "replica"}},
		{"deployment container without name", redis, "- name: redis\n          image: redis", "- image: redis", []string{"Deployment easysmart/redis", "containers[0].name", "Required"}},
		{"service wrong type", proxy, "nodePort: 30080", "nodePort: \"high\"", []string{"Service easysmart/frontproxy"}},
		{"deployment bad enum", redis, "image: redis:7.4.2-alpine", "image: redis:7.4.2-alpine\n          imagePullPolicy: Sometimes", []string{"Deployment easysmart/redis", "Kubernetes validation", "imagePullPolicy", "Sometimes"}},
		{"deployment port out of range", redis, "containerPort: 6379", "containerPort: 70000", []string{"Deployment easysmart/redis", "Kubernetes validation", "containerPort"}},
		{"statefulset negative replicas", "infra/k8s/backing/timescaledb/timescaledb.yaml", "replicas: 1", "replicas: -1", []string{"StatefulSet easysmart/timescaledb", "Kubernetes validation", "replicas"}},
		{"pvc without size", "infra/k8s/backing/s3/s3.yaml", "storage: 5Gi", "storage: 0Gi", []string{"PersistentVolumeClaim easysmart/s3-data", "Kubernetes validation", "storage"}},
		{"job bad restart policy", "infra/k8s/backing/migrate/migrate.yaml", "restartPolicy: OnFailure", "restartPolicy: Always", []string{"Job easysmart/migrate", "Kubernetes validation", "restartPolicy"}},
		{"service selector mismatch type", proxy, "type: NodePort", "type: NodePorts", []string{"Service easysmart/frontproxy", "Kubernetes validation", "type"}},
		{"unpinned third-party image", redis, "image: redis:7.4.2-alpine", "image: redis:latest", []string{"redis:latest", "pinned"}},
		{"invalid label", redis, "app.kubernetes.io/name: redis\nspec:\n  selector", "app.kubernetes.io/name: redis!\nspec:\n  selector", []string{"metadata.labels"}},
		// Front proxy and kind.
		{"front proxy route missing", proxy, "location = /api/v1/telemetria/bulk", "location = /api/v1/telemetria/bulk-old", []string{"differ from the local front door"}},
		{"front proxy host names no service", proxy, "$function_host analytics.easysmart.svc.cluster.local", "$function_host analytic.easysmart.svc.cluster.local", []string{"names no Knative Service"}},
		{"front proxy sends a route to another function", proxy, "$function_host analytics.easysmart.svc.cluster.local", "$function_host ingest.easysmart.svc.cluster.local", []string{"/api/v1/analytics/ ingest", "differ from the local front door"}},
		{"front proxy does not send the secret", proxy, "        proxy_set_header X-ESM-Proxy-Secret \"${FRONT_PROXY_SECRET}\";\n", "", []string{"ConfigMap easysmart/frontproxy-nginx", "proxy_set_header X-ESM-Proxy-Secret ${FRONT_PROXY_SECRET}"}},
		{"front proxy passes the client's X-Real-IP", proxy, "proxy_set_header X-Real-IP $remote_addr;", "proxy_set_header X-Real-IP $http_x_real_ip;", []string{"proxy_set_header X-Real-IP $remote_addr"}},
		{"front proxy location drops the server's headers", proxy, "{ set $function_host auth.", "{ proxy_set_header Host auth.easysmart.svc.cluster.local; set $function_host auth.", []string{"location /api/v1/auth/ sets a proxy_set_header of its own"}},
		{"front proxy template not rendered", proxy, "mountPath: /etc/nginx/templates", "mountPath: /etc/nginx/conf.d/templates", []string{"Deployment easysmart/frontproxy", "must be mounted at /etc/nginx/templates"}},
		{"front proxy secret written in", proxy, "            - name: FRONT_PROXY_SECRET\n              valueFrom:\n                secretKeyRef:\n                  name: easysmart-secrets\n                  key: FRONT_PROXY_SECRET\n", "            - name: FRONT_PROXY_SECRET\n              value: a-front-proxy-secret-written-in-the-manifest\n", []string{"Deployment easysmart/frontproxy", "FRONT_PROXY_SECRET must come from a Secret"}},
		{"function and front proxy secrets differ", "infra/k8s/base/functions/auth.yaml", "key: FRONT_PROXY_SECRET", "key: JWT_SECRET", []string{"Service easysmart/auth", "they must be one Secret key"}},
		{"function not given the proxy secret", ingest, "            - name: FRONT_PROXY_SECRET\n              valueFrom:\n                secretKeyRef:\n                  name: easysmart-secrets\n                  key: FRONT_PROXY_SECRET\n", "", []string{"Service easysmart/ingest", "not set: FRONT_PROXY_SECRET"}},
		{"front proxy loses client addresses", proxy, "  externalTrafficPolicy: Local\n", "", []string{"Service easysmart/frontproxy", "externalTrafficPolicy must be Local"}},
		{"local front door does not send the secret", "infra/local/nginx.conf.template", "        proxy_set_header X-ESM-Proxy-Secret \"@FRONT_PROXY_SECRET@\";\n", "", []string{"infra/local/nginx.conf.template", "proxy_set_header X-ESM-Proxy-Secret @FRONT_PROXY_SECRET@"}},
		// Secrets are never written in a manifest.
		{"secret written in a Knative Service", "infra/k8s/base/functions/auth.yaml", "            - name: JWT_SECRET\n              valueFrom:\n                secretKeyRef:\n                  name: easysmart-secrets\n                  key: JWT_SECRET\n", "            - name: JWT_SECRET\n              value: a-jwt-secret-written-in-the-manifest-0123456789\n", []string{"Service easysmart/auth", "secrets written in the manifest: JWT_SECRET"}},
		{"secret committed in an overlay", "infra/k8s/overlays/kind/kustomization.yaml", "  - ../../backing\n", "  - ../../backing\nsecretGenerator:\n  - name: easysmart-secrets\n    namespace: easysmart\n    literals:\n      - JWT_SECRET=a-jwt-secret-committed-with-the-overlay-0123456789\ngeneratorOptions:\n  disableNameSuffixHash: true\n", []string{"Secret easysmart/easysmart-secrets", "carries values (JWT_SECRET)"}},
		{"kind does not generate a key", "infra/k8s/scripts/common.sh", " FRONT_PROXY_SECRET CLAIM_SIGNING_KEY\"", " CLAIM_SIGNING_KEY\"", []string{"infra/k8s/overlays/kind Service easysmart/auth", "takes FRONT_PROXY_SECRET of easysmart-secrets, which make kind-up does not generate"}},
		{"stack secret written in", stackYML, "      JWT_SECRET: ${JWT_SECRET}\n", "      JWT_SECRET: a-jwt-secret-written-in-stack-yml-0123456789\n", []string{"stack.yml function auth", "secrets written in the manifest: JWT_SECRET"}},
		{"kind port mapping", "infra/kind-config.yaml", "containerPort: 30080", "containerPort: 30081", []string{"nodePort is not mapped"}},
		{"kind config misspelled field", "infra/kind-config.yaml", "extraPortMappings:", "extraPortMapings:", []string{"kind v1alpha4 Cluster", "extraPortMapings"}},
		// stack.yml.
		{"stack misspelled key", stackYML, "environment_file:", "enviroment_file:", []string{"stack.yml", "enviroment_file"}},
		{"stack wrong version", stackYML, "version: 1.0", "version: 2.0", []string{"version must be 1.0"}},
		{"stack missing secret env", stackYML, "      JWT_SECRET: ${JWT_SECRET}\n", "", []string{"stack.yml function auth", "JWT_SECRET"}},
		{"stack bad cron schedule", stackYML, `schedule: "*/15 * * * *"`, `schedule: "every 15 minutes"`, []string{"cron-connector schedule"}},
		{"stack bad quantity", stackYML, "memory: 192Mi", "memory: 192 MB", []string{"stack.yml function auth", "memory"}},
		{"stack env file disagrees", "infra/k8s/openfaas/env/kafka.yml", "KAFKA_TOPIC_RAW: telemetry.raw", "KAFKA_TOPIC_RAW: telemetry.raw2", []string{"KAFKA_TOPIC_RAW", "differs from the Knative ConfigMap"}},
		{"bridge posts elsewhere", "infra/k8s/openfaas/kustomization.yaml", "/function/process", "/function/processor", []string{"PROCESS_URL"}},
		// Each program's environment is exactly what its code reads (esm config vars).
		{"new required variable", "easysmart/config.py", "class DatabaseSettings(Group):\n", "class DatabaseSettings(Group):\n    new_thing: str = env(\"NEW_REQUIRED_VAR\", \"a new required variable\")\n", []string{"Service easysmart/auth", "not set: NEW_REQUIRED_VAR"}},
		{"function reads a new group", "functions/analytics/main.py", readsKafka[0], readsKafka[1], []string{"Service easysmart/analytics", "not set: KAFKA_BOOTSTRAP_SERVERS"}},
		{"stack function reads a new group", "functions/analytics/main.py", readsKafka[0], readsKafka[1], []string{"stack.yml function analytics", "not set: KAFKA_BOOTSTRAP_SERVERS"}},
		{"secret mounted where unused", process, "            - name: DATABASE_URL\n", "            - name: JWT_SECRET\n              valueFrom:\n                secretKeyRef:\n                  name: easysmart-secrets\n                  key: JWT_SECRET\n            - name: DATABASE_URL\n", []string{"Service easysmart/process", "carries JWT_SECRET, which process does not read"}},
		{"config key given where unread", "infra/k8s/base/functions/auth.yaml", "                  key: JWT_SECRET\n", "                  key: JWT_SECRET\n            - name: S3_BUCKET\n              valueFrom:\n                configMapKeyRef:\n                  name: easysmart-config\n                  key: S3_BUCKET\n", []string{"Service easysmart/auth", "carries S3_BUCKET, which auth does not read"}},
		{"code stops reading a group", "functions/auth/main.py", "ProxyTrust.from_settings(ProxySettings.from_env())", "ProxyTrust(b\"\")", []string{"Service easysmart/auth", "carries FRONT_PROXY_SECRET"}},
		{"stack secret given where unread", stackYML, "      THREADS: \"2\"\n", "      THREADS: \"2\"\n      JWT_SECRET: ${JWT_SECRET}\n", []string{"stack.yml function process", "carries JWT_SECRET, which process does not read"}},
		{"stack env file given where unread", stackYML, "      - infra/k8s/openfaas/env/logging.yml\n", "      - infra/k8s/openfaas/env/logging.yml\n      - infra/k8s/openfaas/env/aggregates.yml\n", []string{"stack.yml function auth", "carries AGGREGATE_TIMEZONE"}},
		{"config key nobody takes", "infra/k8s/base/config.yaml", "  LOG_LEVEL: INFO\n", "  LOG_LEVEL: INFO\n  DEFAULT_TIMEZONE: America/Sao_Paulo\n", []string{"ConfigMap easysmart/easysmart-config", "keys given to no container: DEFAULT_TIMEZONE"}},
		{"bridge given a variable it does not read", "infra/k8s/openfaas/kustomization.yaml", "      - LOG_LEVEL=INFO\n", "      - LOG_LEVEL=INFO\n      - DB_POOL_MAX=4\n", []string{"Deployment openfaas-fn/kafka-source-bridge", "carries DB_POOL_MAX, which kafka-source-bridge does not read"}},
		// Alerting: the outbox relay's topics, their KafkaSources and dead letters, the pings, the relay.
		{"outbox topic sent to another function", alerting, "      kind: Service\n      name: alerts\n", "      kind: Service\n      name: notify\n", []string{"KafkaSource easysmart/telemetry-stored-to-alerts", "sends telemetry.stored to notify, the local kafka-source bridge to alerts"}},
		{"outbox topic without a KafkaSource", alerting, "    - alerts.events\n", "    - telemetry.stored\n", []string{"outbox topic \"alerts.events\" has no KafkaSource"}},
		{"kafkasource topic that nobody publishes", alerting, "    - alerts.events\n", "    - alerts.event\n", []string{"KafkaSource easysmart/alerts-events-to-notify", "neither KAFKA_TOPIC_RAW"}},
		{"outbox dead letters among the claim checks", alerting, "        name: telemetry-stored-dlq\n", "        name: telemetry-dlq\n", []string{"KafkaSource easysmart/telemetry-stored-to-alerts", "dead-letters telemetry.stored to \"telemetry.dlq\", not \"telemetry.stored.dlq\""}},
		{"kafkasink topic of no source", alerting, "  topic: alerts.events.dlq\n", "  topic: alerts.dlq\n", []string{"KafkaSink easysmart/alerts-events-dlq", "neither KAFKA_TOPIC_DLQ"}},
		{"outbox topic without a KafkaTopic", topics, "topicName: telemetry.stored\n", "topicName: telemetry.stored2\n", []string{"KafkaSource easysmart/telemetry-stored-to-alerts", "topic \"telemetry.stored\" has no KafkaTopic"}},
		{"local bridge routes elsewhere", localEnv, "alerts.events=${NOTIFY_URL}", "alerts.events=${ALERTS_URL}", []string{"KafkaSource easysmart/alerts-events-to-notify", "sends alerts.events to notify, the local kafka-source bridge to alerts"}},
		{"pingsource job the local ping source does not send", ticks, `data: '{"job": "tick"}'`, `data: '{"job": "tock"}'`, []string{"PingSource easysmart/alerts-tick", "the local ping source sends alerts"}},
		{"pingsource missing", ticks, "      name: notify\n", "      name: alerts\n", []string{"no PingSource sends notify {\"job\": \"deliver\"}"}},
		{"relay not deployed", "infra/k8s/base/kustomization.yaml", "  - relay/outbox-relay.yaml\n", "", []string{"infra/k8s/overlays/kind", "no outbox-relay Deployment"}},
		{"relay runs something else", relay, `"-m", "easysmart.bridges.outbox_relay"`, `"-m", "easysmart.bridges.kafka_source"`, []string{"Deployment easysmart/outbox-relay", "must run python -m easysmart.bridges.outbox_relay"}},
		{"relay given a variable it does not read", relay, "                  key: LOG_LEVEL\n", "                  key: LOG_LEVEL\n            - name: S3_BUCKET\n              valueFrom:\n                configMapKeyRef:\n                  name: easysmart-config\n                  key: S3_BUCKET\n", []string{"Deployment easysmart/outbox-relay", "carries S3_BUCKET, which outbox-relay does not read"}},
		{"openfaas relay missing", faasKust, "  - outbox-relay.yaml\n", "", []string{"infra/k8s/openfaas", "no outbox-relay Deployment"}},
		{"openfaas bridge routes elsewhere", faasKust, "/function/notify", "/function/alerts", []string{"Deployment openfaas-fn/kafka-source-bridge", "BRIDGE_ROUTES routes alerts.events"}},
		{"openfaas ping bridge misses a function", faasKust, "NOTIFY_URL=http://gateway.openfaas.svc.cluster.local:8080/function/notify", "NOTIFY_URL=", []string{"stack.yml function notify", "is pinged neither by the cron-connector"}},
		{"front proxy sends channels to alerts", proxy, "location /api/v1/alerts/channels/   { set $function_host notify.", "location /api/v1/alerts/channels/   { set $function_host alerts.", []string{"/api/v1/alerts/channels/ alerts", "differ from the local front door"}},
		{"local front door misses the alerts routes", "infra/local/nginx.conf.template", "        location = /api/v1/alerts           { proxy_pass http://alerts; }\n", "", []string{"=/api/v1/alerts alerts", "differ from the local front door"}},
		// The live stream: unbuffered, uncompressed and read long enough in both front doors; sized for streams.
		{"local front door buffers the stream", "infra/local/nginx.conf.template", "proxy_pass http://stream; proxy_buffering off;", "proxy_pass http://stream; proxy_buffering on;", []string{"infra/local/nginx.conf.template", "location =/api/v1/alerts/stream: proxy_buffering is on"}},
		{"local front door stops reading the stream early", "infra/local/nginx.conf.template", "gzip off; proxy_read_timeout 600s; }", "gzip off; }", []string{"infra/local/nginx.conf.template", "proxy_read_timeout 120s must be longer than a stream lives (STREAM_MAX_LIFETIME_S 540 s)"}},
		{"front proxy compresses the stream", proxy, "proxy_buffering off; gzip off;", "proxy_buffering off; gzip on;", []string{"ConfigMap easysmart/frontproxy-nginx", "gzip is on"}},
		{"front proxy reads the stream briefly", proxy, "gzip off; proxy_read_timeout 600s; }", "gzip off; proxy_read_timeout 5m; }", []string{"ConfigMap easysmart/frontproxy-nginx", "proxy_read_timeout 5m must be longer"}},
		{"stream lives longer than its request timeout", streamKsvc, "timeoutSeconds: 600", "timeoutSeconds: 300", []string{"Service easysmart/stream", "timeoutSeconds 300 must be longer than a stream lives"}},
		{"stream workers keep no thread free", streamKsvc, "            - name: THREADS\n              value: \"64\"\n", "            - name: THREADS\n              value: \"60\"\n", []string{"Service easysmart/stream", "THREADS 60 leaves no thread beside the streams"}},
		{"stack stream workers keep no thread free", stackYML, "      THREADS: \"64\"\n", "      THREADS: \"32\"\n", []string{"stack.yml function stream", "THREADS 32 leaves no thread"}},
		// Prometheus scrapes every function (infra/observability/).
		{"function without scrape annotation", ingest, "        prometheus.io/scrape: \"true\"\n", "", []string{"Service easysmart/ingest", "annotation prometheus.io/scrape: \"true\" is required"}},
		{"function scraped on the queue-proxy's port", process, `prometheus.io/port: "8080"`, `prometheus.io/port: "9091"`, []string{"Service easysmart/process", `annotation prometheus.io/port is "9091", must be "8080"`}},
		{"stack function without scrape annotations", stackYML, "      prometheus.io/path: /metrics\n", "", []string{"stack.yml function auth", "annotation prometheus.io/path: \"/metrics\" is required"}},
		// Code and image conventions.
		{"production pulls a kind image", "infra/k8s/overlays/production/kustomization.yaml", "  - name: dev.local/stream\n    newName: registry.example.com/easysmart/stream\n", "", []string{"infra/k8s/overlays/production", "Service easysmart/stream", "image \"dev.local/stream:0.1.0\" is kind's"}},
		{"version bump without new tags", "pyproject.toml", `version = "`, `version = "9`, []string{"the Dockerfile builds"}},
		{"root Dockerfile", "Dockerfile", "USER 10001:10001", "USER root", []string{"Dockerfile", "non-root"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			root := copyTree(t)
			mutate(t, root, c.file, c.old, c.new)
			r := run(root)
			if !r.HasError(c.fragments...) {
				t.Fatalf("expected an error with %q; got:\n%s", c.fragments, r)
			}
		})
	}
}

func TestNewFunctionNeedsManifests(t *testing.T) {
	root := copyTree(t)
	if err := os.MkdirAll(filepath.Join(root, "functions", "export"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(root, "functions", "export", "main.py"), []byte("def handle(request): ...\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	r := run(root)
	for _, want := range [][]string{
		{"infra/k8s/overlays/kind", "functions/export/ has no Knative Service"},
		{"infra/k8s/overlays/production", "functions/export/ has no Knative Service"},
		{"functions/export/ has no stack.yml function"},
	} {
		if !r.HasError(want...) {
			t.Errorf("expected %q; got:\n%s", want, r)
		}
	}
}
