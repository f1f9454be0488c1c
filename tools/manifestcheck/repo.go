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
	Routes    []string            // the local front door's public routes
	Jobs      []string            // the retention jobs the code accepts (easysmart/retention.py JOBS)
}

// Functions the manifests carry ahead of their code (docs/architecture.md §3 lists them; issue 4 asks for them).
var plannedFunctions = []string{"analytics", "retention"}

var (
	versionRe = regexp.MustCompile(`(?m)^version\s*=\s*"([^"]+)"`)
	routeRe   = regexp.MustCompile(`location\s+(=\s*)?(/api/\S*)\s*\{`)
	jobsRe    = regexp.MustCompile(`(?m)^JOBS\s*=\s*\(([^)]*)\)`)
	quotedRe  = regexp.MustCompile(`"([a-z_]+)"`)
)

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
	if data, err := os.ReadFile(filepath.Join(root, "infra", "local", "nginx.conf.template")); err == nil {
		for _, m := range routeRe.FindAllSubmatch(data, -1) {
			repo.Routes = append(repo.Routes, strings.TrimSpace(string(m[1]))+string(m[2]))
		}
		sort.Strings(repo.Routes)
	} else {
		r.Notef("infra/local/nginx.conf.template", "missing: front proxy routes not compared with the local front door")
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
