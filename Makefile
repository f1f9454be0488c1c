# Easy Smart Monitor backend: the local stack, tests and benchmarks.
#   make up     install what is missing, start everything, migrate, seed, send a demo upload
#   make test   the same stack, then unit + integration + e2e tests (what CI runs)
#   make up OBSERVE=1 (or make stack OBSERVE=1) also starts Prometheus with infra/observability/rules.yml
SHELL := /bin/bash
.DEFAULT_GOAL := help

STACK := bash infra/local/stack.sh
# Every command below sees the local configuration (infra/local/local.env; your own
# environment wins) and the locally generated JWT secret and claim-signing key.
ENV := set -a; source infra/local/local.env; set +a; \
       if [ -z "$${JWT_SECRET:-}" ] && [ -f .local/secrets/jwt-secret ]; then export JWT_SECRET=$$(cat .local/secrets/jwt-secret); fi; \
       if [ -z "$${CLAIM_SIGNING_KEY:-}" ] && [ -f .local/secrets/claim-signing-key ]; then \
         export CLAIM_SIGNING_KEY=$$(cat .local/secrets/claim-signing-key); fi;
PY := .venv/bin/python
ESM := .venv/bin/esm

.PHONY: help install stack up down status test test-unit lint bench soak migrate demo dlq-replay

help:
	@echo "make up | down | status | test | test-unit | lint | bench | soak | migrate | demo | dlq-replay | check-manifests | kind-up | kind-down | openfaas-deploy"

install:
	@bash infra/local/install.sh

stack: install
	@$(STACK) start
	@$(ENV) $(ESM) migrate
	@$(ENV) $(ESM) seed-demo

up: stack
	@$(ENV) $(ESM) demo
	@$(ENV) echo "==> the stack is up: public API on $$ESM_BASE_URL (make down to stop it)"
	@if [ "$(OBSERVE)" = 1 ]; then $(STACK) prometheus-info; fi

down:
	@$(STACK) stop
	@bash infra/timescale/stop.sh

status:
	@$(STACK) status

migrate:
	@$(ENV) $(ESM) migrate

demo:
	@$(ENV) $(ESM) demo

dlq-replay:
	@$(ENV) $(ESM) dlq replay

test-unit: install
	@$(PY) -m pytest -q tests/unit

# Lint, format check and types (configured in pyproject.toml); make test runs it first.
lint: install
	@.venv/bin/ruff check easysmart functions tests bench
	@.venv/bin/ruff format --check easysmart functions tests bench
	@.venv/bin/mypy easysmart

# The TimescaleDB conformance suite runs against TimescaleDB compiled to WebAssembly (infra/timescale);
# check-manifests (mk/deploy.mk) validates the Knative and OpenFaaS manifests offline.
test: lint stack check-manifests
	@bash infra/timescale/start.sh
	@$(ENV) TIMESCALE_REQUIRED=1 $(PY) -m pytest -q -p no:cacheprovider --timeout=900 \
		tests/unit tests/integration tests/timescale tests/e2e

bench: stack
	@$(ENV) $(PY) bench/run.py

# Simulated devices upload while process is SIGKILLed and Kafka, PostgreSQL, Redis and S3 are stopped and
# started in turn; then every accepted reading must be stored once (tests/soak/soak.py; not part of make test).
# It kills and stops services of this tree's stack: e.g. SOAK_ARGS="--devices 10 --hold 10 --faults kafka,s3".
soak: stack
	@$(ENV) PYTHONPATH=bench $(PY) tests/soak/soak.py $(SOAK_ARGS)

include mk/deploy.mk
