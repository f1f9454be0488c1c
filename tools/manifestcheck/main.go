// manifestcheck validates the deployment manifests of the repository offline: every kustomize
// overlay as `kustomize build` renders it, stack.yml, and the cross checks between them and
// the code (see docs/deploy.md, "What make check-manifests checks").
package main

import (
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"time"
)

type Options struct {
	Repo        string
	StrimziCRDs string // folder of the Strimzi CRDs generated from io.strimzi:api (strimzi-crds.sh)
	Python      string // interpreter with the project's dependencies (esm config vars); default <Repo>/.venv/bin/python
}

// Overlays rendered and validated; the OpenFaaS companions are rendered too.
var knativeOverlays = []string{"infra/k8s/overlays/kind", "infra/k8s/overlays/production"}

const openfaasKustomization = "infra/k8s/openfaas"

func LoadSchemas(opts Options) (*Schemas, error) {
	operatorDir, err := fetchModule(operatorModule, operatorVer, operatorHash)
	if err != nil {
		return nil, err
	}
	kubernetesDir, err := fetchModule(kubernetesModule, kubernetesVer, kubernetesHash)
	if err != nil {
		return nil, err
	}
	s := &Schemas{CRDs: CRDSet{}}
	for _, f := range []string{servingCRDs, eventingCRDs, kafkaCRDs} {
		if err := s.CRDs.LoadCRDs(filepath.Join(operatorDir, f)); err != nil {
			return nil, err
		}
	}
	strimzi, _ := filepath.Glob(filepath.Join(opts.StrimziCRDs, "*.yaml"))
	if len(strimzi) == 0 {
		return nil, fmt.Errorf("no Strimzi CRDs in %q (run tools/manifestcheck/strimzi-crds.sh)", opts.StrimziCRDs)
	}
	for _, f := range strimzi {
		if err := s.CRDs.LoadCRDs(f); err != nil {
			return nil, err
		}
	}
	if s.Core, err = LoadCoreSchemas(filepath.Join(kubernetesDir, "api", "openapi-spec", "v3")); err != nil {
		return nil, err
	}
	if s.EventingFeatures, err = LoadEventingFeatures(filepath.Join(operatorDir, eventingCore)); err != nil {
		return nil, err
	}
	return s, nil
}

// Run performs every check on the repository at opts.Repo.
func Run(opts Options, s *Schemas) *Report {
	r := NewReport()
	python := opts.Python
	if python == "" {
		python = filepath.Join(opts.Repo, ".venv", "bin", "python")
	}
	repo := LoadRepo(opts.Repo, python, r)
	CheckDockerfile(repo, r)
	CheckLocalFrontDoor(repo, r)
	kindConfig := loadKindConfig(opts.Repo, r)

	var kindRender *Rendered
	for _, overlay := range knativeOverlays {
		objs, err := Render(filepath.Join(opts.Repo, overlay), overlay)
		if err != nil {
			r.Errorf(overlay, "%v", err)
			continue
		}
		rd := &Rendered{Label: overlay, Objects: objs}
		for _, o := range objs {
			s.ValidateObject(o, r)
		}
		kc := kindConfig
		if filepath.Base(overlay) != "kind" {
			kc = nil
		} else {
			kindRender = rd
		}
		CheckKnative(repo, rd, kc, r)
	}
	var bridge *Rendered
	if objs, err := Render(filepath.Join(opts.Repo, openfaasKustomization), openfaasKustomization); err != nil {
		r.Errorf(openfaasKustomization, "%v", err)
	} else {
		bridge = &Rendered{Label: openfaasKustomization, Objects: objs}
		for _, o := range objs {
			s.ValidateObject(o, r)
		}
	}
	stack := CheckStack(opts.Repo, r)
	CheckOpenFaaS(repo, stack, bridge, kindRender, r)
	return r
}

func main() {
	var opts Options
	flag.StringVar(&opts.Repo, "repo", ".", "repository root")
	flag.StringVar(&opts.StrimziCRDs, "strimzi-crds", "", "folder of the generated Strimzi CRDs")
	flag.StringVar(&opts.Python, "python", "", "Python with the project's dependencies (default: <repo>/.venv/bin/python)")
	flag.Parse()
	start := time.Now()
	s, err := LoadSchemas(opts)
	if err != nil {
		fmt.Fprintln(os.Stderr, "manifestcheck: loading the schemas:", err)
		os.Exit(2)
	}
	r := Run(opts, s)
	fmt.Print(r.String())
	fmt.Printf("manifestcheck: %d errors, %d notes (%.1fs)\n", len(r.Errors), len(r.Notes), time.Since(start).Seconds())
	if len(r.Errors) > 0 {
		os.Exit(1)
	}
}
