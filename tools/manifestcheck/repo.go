package main

import (
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
)

// Repo is what the cross checks read from the rest of the repository.
type Repo struct {
	Root      string
	Functions []string            // functions/<name>/ folders that have a main.py
	Planned   map[string]bool     // functions the manifests already carry before their code exists
	Version   string              // [project] version in pyproject.toml: the image tag
	EnvVars   map[string][]EnvVar // what each function and bridge reads (esm config vars)
	FrontDoor *frontDoor          // the local front door (infra/local/nginx.conf.template); nil when missing
	Jobs      []string            // the retention jobs the code accepts (easysmart/retention.py JOBS)
	KindKeys  map[string]bool     // the keys of easysmart-secrets make kind-up generates; nil when unknown
	// The outbox relay's topics (easysmart/outbox.py *_TOPIC), each consumed by one function through a KafkaSource.
	OutboxTopics []string
	// The local kafka-source bridge's routes besides the claim checks' (BRIDGE_ROUTES in infra/local/local.env):
	// topic -> the function it is POSTed to; nil when unknown.
	BridgeRoutes map[string]string
	// What the local ping source sends (easysmart/bridges/ping_source.py): one {function, job} per ping.
	Pings []Ping
}

// Ping is one scheduled CloudEvent of the local ping source: data {"job": Job} to Function.
type Ping struct{ Function, Job string }

// Functions the manifests carry ahead of their code (docs/architecture.md §3 lists them; issue 4 asks for them).
var plannedFunctions = []string{"analytics", "retention"}

var (
	versionRe = regexp.MustCompile(`(?m)^version\s*=\s*"([^"]+)"`)
	jobsRe    = regexp.MustCompile(`(?m)^JOBS\s*=\s*\(([^)]*)\)`)
	quotedRe  = regexp.MustCompile(`"([a-z_]+)"`)
	// infra/k8s/scripts/common.sh: GENERATED_SECRETS="..." and the --from-literal=KEY=... of ensure_secrets.
	generatedRe = regexp.MustCompile(`(?m)^GENERATED_SECRETS="([^"]*)"`)
	literalRe   = regexp.MustCompile(`--from-literal=([A-Z0-9_]+)=`)
	outboxRe    = regexp.MustCompile(`(?m)^[A-Z_]+_TOPIC = "([a-z0-9._-]+)"`)
	// infra/local/local.env: : "${BRIDGE_ROUTES:=telemetry.stored=${ALERTS_URL} ...}"
	bridgeRoutesRe = regexp.MustCompile(`(?m)^: "\$\{BRIDGE_ROUTES:=(.*)\}"$`)
	routeRe        = regexp.MustCompile(`([a-z0-9._-]+)=\$\{([A-Z]+)_URL\}`)
	// easysmart/bridges/ping_source.py pings_of: "name": (config.<function>_url, config.<schedule>, {"job": "<job>"})
	pingRe = regexp.MustCompile(`config\.([a-z]+)_url, config\.[a-z_]+, \{"job": "([a-z_]+)"\}`)
)

const kindSecretsScript = "infra/k8s/scripts/common.sh"

func LoadRepo(root, python string, r *Report) *Repo {
	repo := &Repo{Root: root, Planned: map[string]bool{}}
	for _, p := range plannedFunctions {
		repo.Planned[p] = true
	}
	mains, _ := filepath.Glob(filepath.Join(root, "functions", "*", "main.py"))
	for _, m := range mains {
		repo.Functions = append(repo.Functions, filepath.Base(filepath.Dir(m)))
	}
	sort.Strings(repo.Functions)
	if len(repo.Functions) == 0 {
		r.Errorf("functions/", "no functions/<name>/main.py found")
	}
	if data, err := os.ReadFile(filepath.Join(root, "pyproject.toml")); err != nil {
		r.Errorf("pyproject.toml", "%v", err)
	} else if m := versionRe.FindSubmatch(data); m == nil {
		r.Errorf("pyproject.toml", "no version")
	} else {
		repo.Version = string(m[1])
	}
	if vars, err := LoadEnvVars(root, python, repo.Functions); err != nil {
		r.Errorf("easysmart/config.py", "%v", err)
	} else {
		repo.EnvVars = vars
	}
	if data, err := os.ReadFile(filepath.Join(root, localFrontDoor)); err != nil {
		r.Notef(localFrontDoor, "missing: front proxy routes not compared with the local front door")
	} else if repo.FrontDoor, err = readFrontDoor(string(data)); err != nil {
		r.Errorf(localFrontDoor, "%v", err)
	}
	if data, err := os.ReadFile(filepath.Join(root, kindSecretsScript)); err != nil {
		r.Notef(kindSecretsScript, "missing: the kind overlay's Secret keys are not checked")
	} else if m := generatedRe.FindSubmatch(data); m == nil {
		r.Errorf(kindSecretsScript, "no GENERATED_SECRETS: the keys make kind-up generates into easysmart-secrets")
	} else {
		repo.KindKeys = map[string]bool{}
		for _, key := range strings.Fields(string(m[1])) {
			repo.KindKeys[key] = true
		}
		for _, lm := range literalRe.FindAllSubmatch(data, -1) {
			repo.KindKeys[string(lm[1])] = true
		}
	}
	if data, err := os.ReadFile(filepath.Join(root, "easysmart", "outbox.py")); err == nil {
		for _, m := range outboxRe.FindAllSubmatch(data, -1) {
			repo.OutboxTopics = append(repo.OutboxTopics, string(m[1]))
		}
	}
	if data, err := os.ReadFile(filepath.Join(root, "infra", "local", "local.env")); err == nil {
		if m := bridgeRoutesRe.FindSubmatch(data); m != nil {
			repo.BridgeRoutes = map[string]string{}
			for _, rm := range routeRe.FindAllSubmatch(m[1], -1) {
				repo.BridgeRoutes[string(rm[1])] = strings.ToLower(string(rm[2]))
			}
		}
	}
	if data, err := os.ReadFile(filepath.Join(root, "easysmart", "bridges", "ping_source.py")); err == nil {
		for _, m := range pingRe.FindAllSubmatch(data, -1) {
			repo.Pings = append(repo.Pings, Ping{string(m[1]), string(m[2])})
		}
	}
	if data, err := os.ReadFile(filepath.Join(root, "easysmart", "retention.py")); err == nil {
		if m := jobsRe.FindSubmatch(data); m != nil {
			for _, q := range quotedRe.FindAllSubmatch(m[1], -1) {
				repo.Jobs = append(repo.Jobs, string(q[1]))
			}
		}
	}
	return repo
}

const localFrontDoor = "infra/local/nginx.conf.template"

// PingJobs lists the jobs the local ping source sends to the function.
func (repo *Repo) PingJobs(function string) []string {
	var jobs []string
	for _, p := range repo.Pings {
		if p.Function == function {
			jobs = append(jobs, p.Job)
		}
	}
	return jobs
}

// LocalRoutes lists the local front door's routes as "<route> <function>", sorted; nil when unknown.
func (repo *Repo) LocalRoutes() []string {
	if repo.FrontDoor == nil {
		return nil
	}
	routes := []string{}
	for route, upstream := range repo.FrontDoor.Routes {
		routes = append(routes, route+" "+upstream)
	}
	sort.Strings(routes)
	return routes
}

// CheckLocalFrontDoor: the local front door vouches for client addresses as the front proxy does,
// with the secret infra/local/stack.sh writes in.
func CheckLocalFrontDoor(repo *Repo, r *Report) {
	if repo.FrontDoor == nil {
		return
	}
	for _, problem := range repo.FrontDoor.vouchingProblems("@" + proxySecretVar + "@") {
		r.Errorf(localFrontDoor, "%s", problem)
	}
	r.Pass("front doors: client address and proxy secret")
	checkStreamRoute(repo, repo.FrontDoor, localFrontDoor, r)
}

// Buildable tells whether the Dockerfile builds an image for this function now.
func (repo *Repo) Buildable(name string) bool {
	for _, f := range repo.Functions {
		if f == name {
			return true
		}
	}
	return false
}

// CheckDockerfile checks the one Dockerfile's conventions: a FUNCTION build argument, the
// function's folder copied, functions-framework on port 8080 with WORKERS/THREADS, non-root.
func CheckDockerfile(repo *Repo, r *Report) {
	where := "Dockerfile"
	data, err := os.ReadFile(filepath.Join(repo.Root, "Dockerfile"))
	if err != nil {
		r.Errorf(where, "%v", err)
		return
	}
	text := string(data)
	for _, want := range []struct{ re, why string }{
		{`(?m)^ARG FUNCTION\s*$`, "a FUNCTION build argument"},
		{`(?m)^COPY functions/\$\{FUNCTION\}`, "COPY functions/${FUNCTION}"},
		{`(?m)^FROM python:[0-9.]+-slim`, "a slim Python base image with a pinned version"},
		{`(?m)^CMD \["functions-framework", "--target=handle", "--source=main.py", "--port=8080"\]`, "CMD running functions-framework --target=handle on port 8080 (exec form)"},
		{`(?m)^\s*WORKERS=\d+`, "ENV WORKERS"},
		{`(?m)^\s*THREADS=\d+`, "ENV THREADS"},
		{`(?m)^USER [1-9][0-9]*`, "a non-root numeric USER"},
		{`(?m)^RUN pip install .*\.`, "the shared package installed (pip install .)"},
	} {
		if !regexp.MustCompile(want.re).MatchString(text) {
			r.Errorf(where, "expected %s", want.why)
		}
	}
	r.Pass("Dockerfile conventions")
}
