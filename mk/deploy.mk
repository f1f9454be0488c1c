# Deployment targets (included by the Makefile). docs/deploy.md describes them.
#   make check-manifests   offline: every kustomize overlay, stack.yml and the cross checks
#   make kind-up           Knative on a local kind cluster (needs Docker, kind, kubectl)
#   make kind-down
#   make openfaas-deploy   OpenFaaS CE on the kind cluster (needs Docker, kind, kubectl, helm, faas-cli)
.PHONY: check-manifests kind-up kind-down openfaas-deploy

# Everything check-manifests fetches lives under .local/ (gitignored): Go modules and build cache
# from the Go module proxy, Strimzi's artifacts from Maven Central. Idempotent; a warm run takes
# seconds. knative.dev modules are verified against go.sum / pinned hashes rather than sum.golang.org.
DEPLOY_LOCAL := $(CURDIR)/.local
DEPLOY_GOENV := GOMODCACHE=$(DEPLOY_LOCAL)/go/mod GOCACHE=$(DEPLOY_LOCAL)/go/cache \
                GOFLAGS=-modcacherw GONOSUMDB=knative.dev GOTOOLCHAIN=local
DEPLOY_STRIMZI_CRDS := $(DEPLOY_LOCAL)/manifestcheck/strimzi
DEPLOY_MANIFESTCHECK := $(DEPLOY_LOCAL)/bin/manifestcheck
DEPLOY_PY := $(CURDIR)/.venv/bin/python
KIND_CLUSTER ?= easysmart

# The cross checks ask the code which variables each function reads (`esm config vars`), so the
# project's venv is needed before they run; promtool (Debian's prometheus) checks infra/observability/.
check-manifests:
	@[ -x $(DEPLOY_PY) ] && command -v promtool >/dev/null || bash infra/local/install.sh
	@echo "==> manifestcheck: go build (Go module proxy, cache in .local/go)"
	@cd tools/manifestcheck && $(DEPLOY_GOENV) go build -o $(DEPLOY_MANIFESTCHECK) .
	@echo "==> Strimzi CRDs from io.strimzi:api with Strimzi's CRD generator (Maven Central, .local/m2)"
	@bash tools/manifestcheck/strimzi-crds.sh $(DEPLOY_STRIMZI_CRDS) $(DEPLOY_LOCAL)/m2
	@echo "==> kustomize overlays, stack.yml and cross checks"
	@$(DEPLOY_GOENV) $(DEPLOY_MANIFESTCHECK) -repo $(CURDIR) -strimzi-crds $(DEPLOY_STRIMZI_CRDS) -python $(DEPLOY_PY)
	@echo "==> negative tests: each check can fail"
	@cd tools/manifestcheck && $(DEPLOY_GOENV) STRIMZI_CRDS=$(DEPLOY_STRIMZI_CRDS) REPO_ROOT=$(CURDIR) PYTHON=$(DEPLOY_PY) go test -count=1 ./...
	@echo "==> the Dockerfile's CMD and ENV, run in .venv, answer 200; alerting rules and dashboard (promtool, metric names)"
	@$(DEPLOY_PY) -m pytest -q -p no:cacheprovider tests/deploy

kind-up:
	@KIND_CLUSTER=$(KIND_CLUSTER) bash infra/k8s/scripts/kind-up.sh

kind-down:
	@kind delete cluster --name $(KIND_CLUSTER)

openfaas-deploy:
	@KIND_CLUSTER=$(KIND_CLUSTER) bash infra/k8s/scripts/openfaas-deploy.sh
