package main

import (
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"

	kindv1alpha4 "sigs.k8s.io/kind/pkg/apis/config/v1alpha4"
	sigsyaml "sigs.k8s.io/yaml"
)

// secretSource prefixes the value of a variable that a manifest takes from a secret store instead
// of writing it down: a Kubernetes Secret (secretKeyRef, envFrom secretRef) or, in stack.yml,
// faas-cli's environment (${VAR}).
const secretSource = "secret:"

// The front proxy's shared secret: the functions believe X-Real-IP only on a request carrying it.
const (
	proxySecretVar    = "FRONT_PROXY_SECRET"
	proxySecretHeader = "X-ESM-Proxy-Secret"
)

// Render is one kustomization's output with lookups.
type Rendered struct {
	Label   string
	Objects []*Object
}

func (rd *Rendered) find(apiVersion, kind, ns, name string) *Object {
	for _, o := range rd.Objects {
		if (apiVersion == "" || o.APIVersion == apiVersion) && o.Kind == kind && o.Name == name && (ns == "" || o.Namespace == ns) {
			return o
		}
	}
	return nil
}

func (rd *Rendered) all(kind string) []*Object {
	var out []*Object
	for _, o := range rd.Objects {
		if o.Kind == kind {
			out = append(out, o)
		}
	}
	return out
}

// podSpecs returns the pod specs of a workload object (Knative Service included).
func podSpecs(o *Object) []map[string]any {
	switch o.Kind {
	case "Service":
		if strings.HasPrefix(o.APIVersion, "serving.knative.dev/") {
			return []map[string]any{mapAt(o.Map, "spec", "template", "spec")}
		}
	case "Deployment", "StatefulSet", "DaemonSet", "Job", "ReplicaSet":
		return []map[string]any{mapAt(o.Map, "spec", "template", "spec")}
	case "CronJob":
		return []map[string]any{mapAt(o.Map, "spec", "jobTemplate", "spec", "template", "spec")}
	case "Pod":
		return []map[string]any{mapAt(o.Map, "spec")}
	}
	return nil
}

func containers(ps map[string]any) []map[string]any {
	var out []map[string]any
	for _, key := range []string{"initContainers", "containers"} {
		for _, c := range list(ps, key) {
			if m, ok := c.(map[string]any); ok {
				out = append(out, m)
			}
		}
	}
	return out
}

var imageRe = regexp.MustCompile(`^(?:(.+)/)?([a-z0-9._-]+)(?::([A-Za-z0-9._-]+))?(?:@(sha256:[a-f0-9]{64}))?$`)

// CheckImage: the functions' images are the Dockerfile's (<registry>/<name>:<version>, the
// kind convention being dev.local/<name>:<version>); any other image is pinned (no latest).
func CheckImage(repo *Repo, where, image string, r *Report) {
	m := imageRe.FindStringSubmatch(image)
	if m == nil {
		r.Errorf(where, "image %q is not a valid reference", image)
		return
	}
	registry, name, tag, digest := m[1], m[2], m[3], m[4]
	isFunction := repo.Buildable(name) || repo.Planned[name]
	if isFunction {
		if tag != repo.Version {
			r.Errorf(where, "image %q: the Dockerfile builds %s:%s (pyproject.toml version)", image, name, repo.Version)
		}
		if !repo.Buildable(name) {
			r.Notef(where, "image %q: functions/%s/ does not exist yet, so no image is built for it (planned function)", image, name)
		}
		r.Pass("images: built by the Dockerfile convention")
		return
	}
	if registry == "dev.local" {
		r.Errorf(where, "image %q: dev.local images are built from functions/<name>/, and there is no functions/%s/", image, name)
		return
	}
	if (tag == "" || tag == "latest") && digest == "" {
		r.Errorf(where, "image %q must be pinned to a version tag or digest", image)
		return
	}
	r.Pass("images: third-party images pinned")
}

// envOf collects the variables a container gets: env (name -> source) and envFrom.
func envOf(rd *Rendered, ns string, c map[string]any, where string, r *Report) map[string]string {
	env := map[string]string{}
	for _, e := range list(c, "env") {
		name := str(e, "name")
		switch {
		case get(e, "value") != nil:
			env[name] = str(e, "value")
		case get(e, "valueFrom", "secretKeyRef") != nil:
			ref := mapAt(e, "valueFrom", "secretKeyRef")
			env[name] = secretSource + str(ref, "name") + "/" + str(ref, "key")
			checkKey(rd, "Secret", ns, str(ref, "name"), str(ref, "key"), where, r)
		case get(e, "valueFrom", "configMapKeyRef") != nil:
			ref := mapAt(e, "valueFrom", "configMapKeyRef")
			checkKey(rd, "ConfigMap", ns, str(ref, "name"), str(ref, "key"), where, r)
			if cm := rd.find("v1", "ConfigMap", ns, str(ref, "name")); cm != nil {
				env[name] = str(cm.Map, "data", str(ref, "key"))
			}
		default:
			env[name] = "(from the pod)"
		}
	}
	for _, ef := range list(c, "envFrom") {
		prefix := str(ef, "prefix")
		if ref := mapAt(ef, "configMapRef"); ref != nil {
			cm := rd.find("v1", "ConfigMap", ns, str(ref, "name"))
			if cm == nil {
				r.Errorf(where, "envFrom ConfigMap %s/%s is not in the manifests", ns, str(ref, "name"))
				continue
			}
			for k, v := range mapAt(cm.Map, "data") {
				env[prefix+k] = fmt.Sprint(v)
			}
		}
		if ref := mapAt(ef, "secretRef"); ref != nil {
			s := rd.find("v1", "Secret", ns, str(ref, "name"))
			if s == nil {
				r.Errorf(where, "envFrom Secret %s/%s is not in the manifests", ns, str(ref, "name"))
				continue
			}
			for _, key := range []string{"data", "stringData"} {
				for k := range mapAt(s.Map, key) {
					env[prefix+k] = secretSource + str(ref, "name") + "/" + k
				}
			}
		}
	}
	return env
}

// checkKey: a referenced key must exist when the Secret/ConfigMap is part of the manifests; a
// Secret that is not (production creates it out of band) is noted once.
func checkKey(rd *Rendered, kind, ns, name, key, where string, r *Report) {
	o := rd.find("v1", kind, ns, name)
	if o == nil {
		if kind == "Secret" {
			r.Notef(rd.Label, "Secret %s/%s is created outside the manifests (documented in the overlay)", ns, name)
			return
		}
		r.Errorf(where, "%s %s/%s is not in the manifests", kind, ns, name)
		return
	}
	if get(o.Map, "data", key) == nil && get(o.Map, "stringData", key) == nil {
		r.Errorf(where, "%s %s/%s has no key %q", kind, ns, name, key)
	}
}

// CheckKnative runs the cross checks of one Knative overlay.
func CheckKnative(repo *Repo, rd *Rendered, kindConfig map[string]any, r *Report) {
	// Every function folder has a Knative Service, with the visibility the design gives it.
	for _, fn := range repo.Functions {
		if rd.find("serving.knative.dev/v1", "Service", "", fn) == nil {
			r.Errorf(rd.Label, "functions/%s/ has no Knative Service named %s", fn, fn)
		}
	}
	for _, o := range rd.Objects {
		for _, ps := range podSpecs(o) {
			for _, c := range containers(ps) {
				image := str(c, "image")
				CheckImage(repo, o.ID(), image, r)
				// dev.local images exist only in kind's nodes (make kind-up loads them); elsewhere they cannot be pulled.
				if !strings.HasSuffix(rd.Label, "/kind") && strings.HasPrefix(image, "dev.local/") {
					r.Errorf(o.ID(), "image %q is kind's; this overlay must name it in its registry (kustomize images)", image)
				}
			}
		}
	}
	functionEnv := map[string]map[string]string{} // Knative Service name -> its container's environment
	for _, o := range rd.all("Service") {
		if o.APIVersion != "serving.knative.dev/v1" {
			continue
		}
		functionEnv[o.Name] = checkKnativeService(repo, rd, o, r)
	}
	for _, o := range rd.all("Job") {
		if o.Name != "migrate" {
			continue
		}
		c := containers(podSpecs(o)[0])
		if len(c) != 1 {
			r.Errorf(o.ID(), "expected one container")
			continue
		}
		cmd := fmt.Sprint(get(c[0], "command"), get(c[0], "args"))
		if !strings.Contains(cmd, "esm migrate") {
			r.Errorf(o.ID(), "the migration Job must run `esm migrate`, runs %s", cmd)
		}
		env := envOf(rd, o.Namespace, c[0], o.ID(), r)
		if env["DB_MODE"] != "timescaledb" {
			r.Errorf(o.ID(), "the migration Job must run with DB_MODE=timescaledb")
		}
		if env["DATABASE_URL"] == "" {
			r.Errorf(o.ID(), "the migration Job needs DATABASE_URL")
		}
	}
	checkConfigKeysUsed(rd, r)
	checkNoCommittedSecrets(rd, r)
	if kindConfig != nil {
		checkKindSecretKeys(repo, rd, r)
	}
	checkEventing(repo, rd, r)
	checkRelay(repo, rd, r)
	checkFrontProxy(repo, rd, functionEnv, kindConfig, r)
}

// checkRelay: the outbox relay runs beside the functions (its events are what alerts and notify receive), with
// exactly the environment its code reads.
func checkRelay(repo *Repo, rd *Rendered, r *Report) {
	if _, ok := repo.EnvVars["outbox-relay"]; !ok {
		return // no relay in the code (or the code could not be asked, reported once by LoadRepo)
	}
	d := rd.find("apps/v1", "Deployment", "", "outbox-relay")
	if d == nil {
		r.Errorf(rd.Label, "no outbox-relay Deployment: the outbox's events would never leave the database")
		return
	}
	for _, ps := range podSpecs(d) {
		for _, c := range containers(ps) {
			if cmd := fmt.Sprint(get(c, "command")); !strings.Contains(cmd, "easysmart.bridges.outbox_relay") {
				r.Errorf(d.ID(), "must run python -m easysmart.bridges.outbox_relay, runs %s", cmd)
			}
			checkEnvAgainstCode(repo, d.Name, envOf(rd, d.Namespace, c, d.ID(), r), d.ID(), r)
		}
	}
	r.Pass("outbox relay: Deployment and env")
}

// checkNoCommittedSecrets: a Secret rendered from the repository would ship its values with it. The
// kind deployment generates easysmart-secrets at deploy time (infra/k8s/scripts/common.sh) and
// production creates it out of band.
func checkNoCommittedSecrets(rd *Rendered, r *Report) {
	for _, o := range rd.all("Secret") {
		var keys []string
		for _, field := range []string{"data", "stringData"} {
			for k := range mapAt(o.Map, field) {
				keys = append(keys, k)
			}
		}
		sort.Strings(keys)
		if len(keys) > 0 {
			r.Errorf(o.ID(), "carries values (%s): secrets are generated at deploy time or created by the operator, never committed", strings.Join(keys, ", "))
		}
	}
	r.Pass("secrets: none committed")
}

// checkKindSecretKeys: on kind, easysmart-secrets is generated by make kind-up, so every key a
// container takes from it must be one the script generates.
func checkKindSecretKeys(repo *Repo, rd *Rendered, r *Report) {
	if repo.KindKeys == nil {
		return
	}
	for _, o := range rd.Objects {
		for _, ps := range podSpecs(o) {
			for _, c := range containers(ps) {
				for _, e := range list(c, "env") {
					ref := mapAt(e, "valueFrom", "secretKeyRef")
					if ref != nil && str(ref, "name") == "easysmart-secrets" && !repo.KindKeys[str(ref, "key")] {
						r.Errorf(o.ID(), "takes %s of easysmart-secrets, which make kind-up does not generate (%s)", str(ref, "key"), kindSecretsScript)
					}
				}
			}
		}
	}
	r.Pass("secrets: kind generates every key used")
}

// checkConfigKeysUsed: every key of easysmart-config is given to some container, so a value no
// program reads any more does not linger there looking like a setting.
func checkConfigKeysUsed(rd *Rendered, r *Report) {
	cm := rd.find("v1", "ConfigMap", "easysmart", "easysmart-config")
	if cm == nil {
		return
	}
	used := map[string]bool{}
	for _, o := range rd.Objects {
		for _, ps := range podSpecs(o) {
			for _, c := range containers(ps) {
				for _, e := range list(c, "env") {
					if ref := mapAt(e, "valueFrom", "configMapKeyRef"); ref != nil && str(ref, "name") == cm.Name {
						used[str(ref, "key")] = true
					}
				}
				for _, ef := range list(c, "envFrom") {
					if str(ef, "configMapRef", "name") == cm.Name {
						for k := range mapAt(cm.Map, "data") {
							used[k] = true
						}
					}
				}
			}
		}
	}
	var unused []string
	for k := range mapAt(cm.Map, "data") {
		if !used[k] {
			unused = append(unused, k)
		}
	}
	sort.Strings(unused)
	if len(unused) > 0 {
		r.Errorf(cm.ID(), "keys given to no container: %s", strings.Join(unused, ", "))
		return
	}
	r.Pass("env: every easysmart-config key is used")
}

// checkKnativeService checks one function's Knative Service and returns its container's environment.
func checkKnativeService(repo *Repo, rd *Rendered, o *Object, r *Report) map[string]string {
	where := o.ID()
	// Only the front proxy is reachable from outside the cluster: it is what vouches for client addresses.
	if str(o.Map, "metadata", "labels", "networking.knative.dev/visibility") != "cluster-local" {
		r.Errorf(where, "%s is publicly routable: functions are reached through the front proxy only (label networking.knative.dev/visibility: cluster-local)", o.Name)
	}
	ann := mapAt(o.Map, "spec", "template", "metadata", "annotations")
	for _, a := range []string{"autoscaling.knative.dev/target", "autoscaling.knative.dev/min-scale", "autoscaling.knative.dev/max-scale"} {
		if _, ok := ann[a]; !ok {
			r.Errorf(where, "annotation %s is required (sized from the benchmarks)", a)
		}
	}
	spec := mapAt(o.Map, "spec", "template", "spec")
	cc, _ := get(spec, "containerConcurrency").(int64)
	if cc <= 0 {
		r.Errorf(where, "containerConcurrency must be set (> 0)")
	}
	timeout, _ := get(spec, "timeoutSeconds").(int64)
	if timeout <= 0 {
		r.Errorf(where, "timeoutSeconds must be set")
	}
	if o.Name == "ingest" && timeout < 120 {
		r.Errorf(where, "timeoutSeconds %d is too short for a 10 MiB upload over a slow uplink (>= 120)", timeout)
	}
	cs := containers(spec)
	if len(cs) != 1 {
		r.Errorf(where, "expected one container, got %d", len(cs))
		return nil
	}
	c := cs[0]
	port := functionPort // Knative's default too, when the container names no port
	if ports := list(c, "ports"); len(ports) > 0 {
		if p, ok := get(ports[0], "containerPort").(int64); ok {
			port = strconv.FormatInt(p, 10)
		}
	}
	checkScrapeAnnotations(where, ann, port, r)
	for _, k := range []string{"requests", "limits"} {
		for _, res := range []string{"cpu", "memory"} {
			if get(c, "resources", k, res) == nil {
				r.Errorf(where, "resources.%s.%s is required", k, res)
			}
		}
	}
	env := envOf(rd, o.Namespace, c, where, r)
	checkEnvAgainstCode(repo, o.Name, env, where, r)
	workers, errW := strconv.Atoi(env["WORKERS"])
	threads, errT := strconv.Atoi(env["THREADS"])
	if errW != nil || errT != nil || workers < 1 || threads < 1 {
		r.Errorf(where, "WORKERS and THREADS must be set explicitly (gunicorn under functions-framework)")
	} else if cc > 0 && int64(workers*threads) != cc {
		r.Errorf(where, "containerConcurrency %d must equal WORKERS x THREADS = %d", cc, workers*threads)
	}
	if o.Name == streamFunction {
		checkStreamSizing(repo, env, timeout, where, r)
	}
	r.Pass("knative Service: sizing, visibility and env")
	return env
}

// The port every function's image listens on (the Dockerfile's CMD, CheckDockerfile).
const functionPort = "8080"

// checkScrapeAnnotations: a Prometheus that discovers pods by the prometheus.io annotations scrapes every function's
// /metrics (easysmart/web.py) on the port its container listens on, so the alerting rules and the dashboard
// (infra/observability/) see every function.
func checkScrapeAnnotations(where string, annotations map[string]any, port string, r *Report) {
	for _, want := range [][2]string{{"prometheus.io/scrape", "true"}, {"prometheus.io/path", "/metrics"}, {"prometheus.io/port", port}} {
		got, ok := annotations[want[0]]
		switch {
		case !ok:
			r.Errorf(where, "annotation %s: %q is required (Prometheus scrapes every function)", want[0], want[1])
		case fmt.Sprint(got) != want[1]:
			r.Errorf(where, "annotation %s is %q, must be %q", want[0], fmt.Sprint(got), want[1])
		}
	}
	r.Pass("scrape annotations: every function")
}

// resolveRef finds the target of a Destination.ref.
func resolveRef(rd *Rendered, from *Object, ref map[string]any, what string, r *Report) *Object {
	ns := str(ref, "namespace")
	if ns == "" {
		ns = from.Namespace
	}
	t := rd.find(str(ref, "apiVersion"), str(ref, "kind"), ns, str(ref, "name"))
	if t == nil {
		r.Errorf(from.ID(), "%s %s %s/%s (%s) is not in the manifests", what, str(ref, "kind"), ns, str(ref, "name"), str(ref, "apiVersion"))
		return nil
	}
	r.Pass("eventing: sinks resolve")
	return t
}

func checkEventing(repo *Repo, rd *Rendered, r *Report) {
	topics := map[string]*Object{}
	for _, t := range rd.all("KafkaTopic") {
		name := str(t.Map, "spec", "topicName")
		if name == "" {
			name = t.Name
		}
		topics[name] = t
		cluster := str(t.Map, "metadata", "labels", "strimzi.io/cluster")
		if rd.find("kafka.strimzi.io/v1", "Kafka", t.Namespace, cluster) == nil {
			r.Errorf(t.ID(), "label strimzi.io/cluster=%q names no Kafka in namespace %s", cluster, t.Namespace)
		}
	}
	for _, p := range rd.all("KafkaNodePool") {
		cluster := str(p.Map, "metadata", "labels", "strimzi.io/cluster")
		if rd.find("kafka.strimzi.io/v1", "Kafka", p.Namespace, cluster) == nil {
			r.Errorf(p.ID(), "label strimzi.io/cluster=%q names no Kafka in namespace %s", cluster, p.Namespace)
		}
	}
	haveTopics := len(rd.all("KafkaTopic")) > 0
	config := rd.find("v1", "ConfigMap", "easysmart", "easysmart-config")
	topicExists := func(o *Object, topic, what string) {
		if haveTopics {
			if topics[topic] == nil {
				r.Errorf(o.ID(), "%s %q has no KafkaTopic", what, topic)
			} else {
				r.Pass("eventing: topics exist")
			}
		}
	}
	checkBootstrap := func(o *Object) {
		servers := list(o.Map, "spec", "bootstrapServers")
		var joined []string
		for _, s := range servers {
			joined = append(joined, fmt.Sprint(s))
		}
		if config != nil && strings.Join(joined, ",") != str(config.Map, "data", "KAFKA_BOOTSTRAP_SERVERS") {
			r.Errorf(o.ID(), "bootstrapServers %v differ from KAFKA_BOOTSTRAP_SERVERS in easysmart-config", joined)
		}
		if !haveTopics {
			return
		}
		for _, s := range joined {
			host, port, _ := strings.Cut(s, ":")
			parts := strings.Split(host, ".")
			cluster := strings.TrimSuffix(parts[0], "-kafka-bootstrap")
			if len(parts) < 2 || cluster == parts[0] {
				r.Errorf(o.ID(), "bootstrap server %q is not a Strimzi bootstrap service (<cluster>-kafka-bootstrap.<namespace>)", s)
				continue
			}
			k := rd.find("kafka.strimzi.io/v1", "Kafka", parts[1], cluster)
			if k == nil {
				r.Errorf(o.ID(), "bootstrap server %q: no Kafka %s in namespace %s", s, cluster, parts[1])
				continue
			}
			found := false
			for _, l := range list(k.Map, "spec", "kafka", "listeners") {
				if fmt.Sprint(get(l, "port")) == port && get(l, "tls") == false {
					found = true
				}
			}
			if !found {
				r.Errorf(o.ID(), "bootstrap server %q: Kafka %s has no plain listener on port %s", s, cluster, port)
			}
		}
	}
	rawTopic, dlqTopic := "", ""
	if config != nil {
		rawTopic, dlqTopic = str(config.Map, "data", "KAFKA_TOPIC_RAW"), str(config.Map, "data", "KAFKA_TOPIC_DLQ")
	}
	sourced := map[string]bool{}
	for _, o := range rd.all("KafkaSource") {
		sinkName := str(o.Map, "spec", "sink", "ref", "name")
		var deadLetters *Object
		if ref := mapAt(o.Map, "spec", "delivery", "deadLetterSink", "ref"); ref != nil {
			deadLetters = resolveRef(rd, o, ref, "deadLetterSink", r)
		}
		for _, t := range list(o.Map, "spec", "topics") {
			topic := fmt.Sprint(t)
			topicExists(o, topic, "topic")
			sourced[topic] = true
			wantDLQ := ""
			switch {
			case config == nil:
			case topic == rawTopic:
				wantDLQ = dlqTopic
			case contains(repo.OutboxTopics, topic):
				// As the local bridge names it; telemetry.dlq keeps claim checks only (esm dlq replay).
				wantDLQ = topic + ".dlq"
				if fn, ok := repo.BridgeRoutes[topic]; repo.BridgeRoutes != nil && fn != sinkName {
					if !ok {
						fn = "nothing"
					}
					r.Errorf(o.ID(), "sends %s to %s, the local kafka-source bridge to %s (BRIDGE_ROUTES in infra/local/local.env)", topic, sinkName, fn)
				}
			default:
				r.Errorf(o.ID(), "topic %v is neither KAFKA_TOPIC_RAW (%s) nor an outbox topic %v (easysmart/outbox.py)", t, rawTopic, repo.OutboxTopics)
			}
			if wantDLQ != "" && deadLetters != nil && deadLetters.Kind == "KafkaSink" {
				if got := str(deadLetters.Map, "spec", "topic"); got != wantDLQ {
					r.Errorf(o.ID(), "dead-letters %s to %q, not %q", topic, got, wantDLQ)
				}
			}
		}
		checkBootstrap(o)
		if str(o.Map, "spec", "ordering") == "" {
			r.Errorf(o.ID(), "spec.ordering must be explicit")
		}
		d := mapAt(o.Map, "spec", "delivery")
		retry, _ := get(d, "retry").(int64)
		if retry <= 0 {
			r.Errorf(o.ID(), "delivery.retry must be > 0 (a deadLetterSink alone means zero retries)")
		}
		for _, k := range []string{"backoffPolicy", "backoffDelay", "timeout", "deadLetterSink"} {
			if get(d, k) == nil {
				r.Errorf(o.ID(), "delivery.%s must be explicit", k)
			}
		}
		if ref := mapAt(o.Map, "spec", "sink", "ref"); ref != nil {
			resolveRef(rd, o, ref, "sink", r)
		} else {
			r.Errorf(o.ID(), "sink.ref is required")
		}
	}
	// Every topic the outbox relay publishes to reaches its function.
	for _, topic := range repo.OutboxTopics {
		if !sourced[topic] {
			r.Errorf(rd.Label, "outbox topic %q has no KafkaSource: the relay's events would reach no function", topic)
		}
	}
	for _, o := range rd.all("KafkaSink") {
		topic := str(o.Map, "spec", "topic")
		topicExists(o, topic, "topic")
		outboxDLQ := strings.HasSuffix(topic, ".dlq") && contains(repo.OutboxTopics, strings.TrimSuffix(topic, ".dlq"))
		if config != nil && topic != dlqTopic && !outboxDLQ {
			r.Errorf(o.ID(), "topic %q is neither KAFKA_TOPIC_DLQ (%s) nor an outbox topic's <topic>.dlq", topic, dlqTopic)
		}
		checkBootstrap(o)
	}
	pinged := map[Ping]bool{}
	for _, o := range rd.all("PingSource") {
		fn := str(o.Map, "spec", "sink", "ref", "name")
		var data struct{ Job string }
		dataErr := sigsyaml.Unmarshal([]byte(str(o.Map, "spec", "data")), &data)
		if len(repo.Jobs) > 0 && fn == "retention" {
			if dataErr != nil || !contains(repo.Jobs, data.Job) {
				r.Errorf(o.ID(), "data %q must be {\"job\": one of %v} (easysmart/retention.py)", str(o.Map, "spec", "data"), repo.Jobs)
			}
		}
		// The same pings as the local ping source, to the same functions.
		if jobs := repo.PingJobs(fn); len(jobs) > 0 {
			if dataErr != nil || !contains(jobs, data.Job) {
				r.Errorf(o.ID(), "data %q: the local ping source sends %s {\"job\": one of %v} (easysmart/bridges/ping_source.py)", str(o.Map, "spec", "data"), fn, jobs)
			}
			pinged[Ping{fn, data.Job}] = true
		}
		if ref := mapAt(o.Map, "spec", "sink", "ref"); ref != nil {
			resolveRef(rd, o, ref, "sink", r)
		} else {
			r.Errorf(o.ID(), "sink.ref is required")
		}
	}
	for _, p := range repo.Pings {
		if rd.find("serving.knative.dev/v1", "Service", "", p.Function) != nil && !pinged[p] {
			r.Errorf(rd.Label, "no PingSource sends %s {\"job\": %q}, as the local ping source does (easysmart/bridges/ping_source.py)", p.Function, p.Job)
		}
	}
	if !haveTopics {
		r.Notef(rd.Label, "no KafkaTopic resources (managed Kafka): topics checked against easysmart-config only")
	}
}

// The image (nginx-unprivileged) renders /etc/nginx/templates/*.template with envsubst at start.
const (
	frontProxyTemplate  = "default.conf.template"
	frontProxyTemplates = "/etc/nginx/templates"
)

func checkFrontProxy(repo *Repo, rd *Rendered, functionEnv map[string]map[string]string, kindConfig map[string]any, r *Report) {
	cm := rd.find("v1", "ConfigMap", "", "frontproxy-nginx")
	if cm == nil {
		r.Errorf(rd.Label, "no front proxy ConfigMap frontproxy-nginx")
		return
	}
	fd, err := readFrontDoor(str(cm.Map, "data", frontProxyTemplate))
	if err != nil {
		r.Errorf(cm.ID(), "key %s: %v", frontProxyTemplate, err)
		return
	}
	if len(fd.Routes) == 0 {
		r.Errorf(cm.ID(), "key %s routes nothing (the nginx configuration the image renders)", frontProxyTemplate)
		return
	}
	for _, problem := range fd.vouchingProblems("${" + proxySecretVar + "}") {
		r.Errorf(cm.ID(), "%s", problem)
	}
	checkStreamRoute(repo, fd, cm.ID(), r)
	var routes []string
	routed := map[string]bool{}
	for route, host := range fd.Routes {
		parts := strings.Split(host, ".")
		if len(parts) < 3 || parts[2] != "svc" {
			r.Errorf(cm.ID(), "route %s: $function_host %s is not <service>.<namespace>.svc.cluster.local", route, host)
			continue
		}
		if rd.find("serving.knative.dev/v1", "Service", parts[1], parts[0]) == nil {
			r.Errorf(cm.ID(), "route %s: Host %s names no Knative Service", route, host)
		}
		routes = append(routes, route+" "+parts[0])
		routed[parts[0]] = true
	}
	sort.Strings(routes)
	if local := repo.LocalRoutes(); local != nil && strings.Join(routes, ", ") != strings.Join(local, ", ") {
		r.Errorf(cm.ID(), "front proxy routes [%s] differ from the local front door's [%s]", strings.Join(routes, ", "), strings.Join(local, ", "))
	}
	secret := checkFrontProxyDeployment(rd, cm, r)
	// Each function behind the front proxy that checks the secret must be given the same one.
	for fn := range routed {
		if env := functionEnv[fn]; env != nil && repo.Reads(fn, proxySecretVar) && env[proxySecretVar] != secret {
			ksvc := rd.find("serving.knative.dev/v1", "Service", "", fn)
			r.Errorf(ksvc.ID(), "%s comes from %q, the front proxy's from %q: they must be one Secret key", proxySecretVar, env[proxySecretVar], secret)
		}
	}
	svc := rd.find("v1", "Service", "", "frontproxy")
	if svc == nil {
		r.Errorf(rd.Label, "no Service frontproxy")
		return
	}
	if t := str(svc.Map, "spec", "type"); t != "NodePort" && t != "LoadBalancer" {
		r.Errorf(svc.ID(), "type %q: the front proxy is the way in from outside the cluster (NodePort or LoadBalancer)", t)
	}
	if str(svc.Map, "spec", "externalTrafficPolicy") != "Local" {
		r.Errorf(svc.ID(), "externalTrafficPolicy must be Local: a hop through another node replaces the client's address with the node's")
	}
	if kindConfig != nil {
		mapped := map[string]bool{}
		for _, n := range list(kindConfig, "nodes") {
			for _, pm := range list(n, "extraPortMappings") {
				mapped[fmt.Sprint(get(pm, "containerPort"))] = true
			}
		}
		ok := false
		for _, p := range list(svc.Map, "spec", "ports") {
			if mapped[fmt.Sprint(get(p, "nodePort"))] {
				ok = true
			}
		}
		if !ok {
			r.Errorf(rd.Label, "the front proxy Service's nodePort is not mapped by infra/kind-config.yaml")
		}
	}
	r.Pass("front proxy: routes, hosts and proxy secret")
}

// checkFrontProxyDeployment: the nginx container renders the ConfigMap as a template (else it would
// send the literal "${FRONT_PROXY_SECRET}") with the secret from a Secret. Returns where the secret comes from.
func checkFrontProxyDeployment(rd *Rendered, cm *Object, r *Report) string {
	d := rd.find("apps/v1", "Deployment", cm.Namespace, "frontproxy")
	if d == nil {
		r.Errorf(rd.Label, "no Deployment frontproxy")
		return ""
	}
	ps := podSpecs(d)[0]
	volume := ""
	for _, v := range list(ps, "volumes") {
		if str(v, "configMap", "name") == cm.Name {
			volume = str(v, "name")
		}
	}
	for _, c := range containers(ps) {
		for _, m := range list(c, "volumeMounts") {
			if str(m, "name") != volume {
				continue
			}
			if str(m, "mountPath") != frontProxyTemplates {
				r.Errorf(d.ID(), "%s must be mounted at %s, where the image renders templates, not %s", cm.Name, frontProxyTemplates, str(m, "mountPath"))
			}
			secret := envOf(rd, d.Namespace, c, d.ID(), r)[proxySecretVar]
			if !strings.HasPrefix(secret, secretSource) {
				r.Errorf(d.ID(), "%s must come from a Secret (secretKeyRef)", proxySecretVar)
			}
			return secret
		}
	}
	r.Errorf(d.ID(), "no container mounts the ConfigMap %s", cm.Name)
	return ""
}

// CheckOpenFaaS cross-checks stack.yml with the functions, the code and the bridge manifests.
func CheckOpenFaaS(repo *Repo, stack map[string]*StackFunction, bridge *Rendered, kindRender *Rendered, r *Report) {
	if stack == nil {
		return
	}
	for _, fn := range repo.Functions {
		if stack[fn] == nil {
			r.Errorf("stack.yml", "functions/%s/ has no stack.yml function", fn)
		}
	}
	for name, fn := range stack {
		where := "stack.yml function " + name
		CheckImage(repo, where, fn.Image, r)
		annotations := map[string]any{}
		for k, v := range fn.Annotations {
			annotations[k] = v
		}
		checkScrapeAnnotations(where, annotations, functionPort, r)
		checkEnvAgainstCode(repo, name, fn.Environment, where, r)
		if fn.Environment["WORKERS"] == "" || fn.Environment["THREADS"] == "" {
			r.Errorf(where, "WORKERS and THREADS must be set explicitly")
		}
		if name == streamFunction {
			checkStreamSizing(repo, fn.Environment, 0, where, r)
		}
	}
	if rt := stack["retention"]; rt != nil && rt.Annotations["topic"] != "cron-function" {
		r.Errorf("stack.yml function retention", "must be triggered by the cron-connector (annotation topic: cron-function)")
	}
	// The non-secret settings must agree with the Knative ConfigMap.
	if kindRender != nil {
		if cm := kindRender.find("v1", "ConfigMap", "easysmart", "easysmart-config"); cm != nil {
			for name, fn := range stack {
				for k, v := range mapAt(cm.Map, "data") {
					if got, ok := fn.Environment[k]; ok && got != fmt.Sprint(v) {
						r.Errorf("stack.yml function "+name, "%s=%q differs from the Knative ConfigMap (%q)", k, got, v)
					}
				}
			}
		}
	}
	if bridge == nil {
		return
	}
	checkRelay(repo, bridge, r)
	checkPingBridge(repo, stack, bridge, r)
	d := bridge.find("apps/v1", "Deployment", "", "kafka-source-bridge")
	if d == nil {
		r.Errorf(bridge.Label, "no kafka-source-bridge Deployment")
		return
	}
	for _, ps := range podSpecs(d) {
		for _, c := range containers(ps) {
			CheckImage(repo, d.ID(), str(c, "image"), r)
			cmd := fmt.Sprint(get(c, "command"))
			if !strings.Contains(cmd, "easysmart.bridges.kafka_source") {
				r.Errorf(d.ID(), "must run python -m easysmart.bridges.kafka_source, runs %s", cmd)
			}
			env := envOf(bridge, d.Namespace, c, d.ID(), r)
			checkEnvAgainstCode(repo, d.Name, env, d.ID(), r)
			url := env["PROCESS_URL"]
			if !strings.HasSuffix(strings.TrimSuffix(url, "/"), "/function/process") || stack["process"] == nil {
				r.Errorf(d.ID(), "PROCESS_URL %q must be the gateway's /function/process, a stack.yml function", url)
			}
			for _, k := range []string{"KAFKA_BOOTSTRAP_SERVERS", "KAFKA_TOPIC_RAW", "KAFKA_TOPIC_DLQ"} {
				if env[k] == "" {
					r.Errorf(d.ID(), "%s must be set", k)
				}
			}
			// The local bridge's routes, each to the gateway's /function/<name>.
			routes := map[string]string{}
			for _, entry := range strings.Fields(env["BRIDGE_ROUTES"]) {
				topic, url, _ := strings.Cut(entry, "=")
				routes[topic] = url
			}
			for topic, fn := range repo.BridgeRoutes {
				url := routes[topic]
				if !strings.HasSuffix(strings.TrimSuffix(url, "/"), "/function/"+fn) || stack[fn] == nil {
					r.Errorf(d.ID(), "BRIDGE_ROUTES routes %s to %q, not the gateway's /function/%s (a stack.yml function), as the local bridge does", topic, url, fn)
				}
			}
			if kindRender != nil {
				if t := env["KAFKA_TOPIC_RAW"]; t != "" && len(kindRender.all("KafkaTopic")) > 0 {
					found := false
					for _, kt := range kindRender.all("KafkaTopic") {
						if str(kt.Map, "spec", "topicName") == t {
							found = true
						}
					}
					if !found {
						r.Errorf(d.ID(), "KAFKA_TOPIC_RAW %q has no KafkaTopic", t)
					}
				}
			}
		}
	}
	r.Pass("openfaas: stack.yml cross checks")
}

// checkPingBridge: what PingSources trigger in Knative is triggered in OpenFaaS by the cron-connector (an empty
// POST: retention) or by the ping-source bridge Deployment (PingSource CloudEvents to <FUNCTION>_URL at the
// gateway: the functions that take CloudEvents only).
func checkPingBridge(repo *Repo, stack map[string]*StackFunction, bridge *Rendered, r *Report) {
	urls := map[string]string{} // function -> where the ping-source bridge sends its pings
	if d := bridge.find("apps/v1", "Deployment", "", "ping-source-bridge"); d != nil {
		for _, ps := range podSpecs(d) {
			for _, c := range containers(ps) {
				if cmd := fmt.Sprint(get(c, "command")); !strings.Contains(cmd, "easysmart.bridges.ping_source") {
					r.Errorf(d.ID(), "must run python -m easysmart.bridges.ping_source, runs %s", cmd)
				}
				env := envOf(bridge, d.Namespace, c, d.ID(), r)
				checkEnvAgainstCode(repo, d.Name, env, d.ID(), r)
				for k, v := range env {
					if fn, ok := strings.CutSuffix(k, "_URL"); ok && v != "" {
						urls[strings.ToLower(fn)] = v
					}
				}
			}
		}
	}
	for _, p := range repo.Pings {
		fn := stack[p.Function]
		if fn == nil || fn.Annotations["topic"] == "cron-function" {
			continue
		}
		if url := urls[p.Function]; !strings.HasSuffix(strings.TrimSuffix(url, "/"), "/function/"+p.Function) {
			r.Errorf("stack.yml function "+p.Function, "is pinged neither by the cron-connector (annotation topic: cron-function) nor by the ping-source bridge (%s_URL at the gateway's /function/%s; it is %q)", strings.ToUpper(p.Function), p.Function, url)
		}
	}
	r.Pass("openfaas: pings")
}

func loadKindConfig(root string, r *Report) map[string]any {
	where := "infra/kind-config.yaml"
	data, err := os.ReadFile(filepath.Join(root, "infra", "kind-config.yaml"))
	if err != nil {
		r.Errorf(where, "%v", err)
		return nil
	}
	// Strictly decoded into kind's own config types (sigs.k8s.io/kind v0.30.0, v1alpha4).
	var cluster kindv1alpha4.Cluster
	if err := sigsyaml.UnmarshalStrict(data, &cluster); err != nil {
		r.Errorf(where, "strict decoding into kind v1alpha4 Cluster: %v", err)
		return nil
	}
	if cluster.APIVersion != "kind.x-k8s.io/v1alpha4" || cluster.Kind != "Cluster" {
		r.Errorf(where, "must be a kind.x-k8s.io/v1alpha4 Cluster")
	}
	kindv1alpha4.SetDefaultsCluster(&cluster)
	for _, n := range cluster.Nodes {
		for _, pm := range n.ExtraPortMappings {
			if pm.ContainerPort <= 0 || pm.ContainerPort > 65535 || pm.HostPort < 0 || pm.HostPort > 65535 {
				r.Errorf(where, "invalid port mapping %d -> %d", pm.HostPort, pm.ContainerPort)
			}
		}
	}
	var m map[string]any
	if err := sigsyaml.Unmarshal(data, &m); err != nil {
		r.Errorf(where, "%v", err)
		return nil
	}
	r.Pass("kind config: strict decode")
	return m
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}
