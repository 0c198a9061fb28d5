# Two commands do all set-up on a fresh Debian machine:
#   make run    the whole system (stack + migrations + API on :8000 + worker), foreground, Ctrl-C stops
#   make test   the whole test suite against the real local stack
# and one for the edit loop: make test-fast   every test that needs no server (seconds, stack not needed)
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PYTEST_ARGS ?=

# Local development defaults (the stack's credentials); the environment overrides them.
export APP_ENV ?= development
export POSTGRES_PASSWORD ?= apppass
export JWT_SECRET ?= local-dev-secret

.PHONY: run traces test test-fast chaos soak scale-demo up down status venv tools migrate lint format bench clean token docs browser
comma := ,

$(VENV)/.installed: requirements.txt requirements-dev.txt
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "Python 3.11+ is required")'
	@test -x $(PY) || $(PYTHON) -m venv $(VENV) || { echo "make: python3 -m venv failed (Debian: apt-get install python3-venv)"; exit 1; }
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -r requirements-dev.txt
	@touch $@

venv: $(VENV)/.installed

# actionlint (lints .github/workflows in `make lint`), built from its Go module
ACTIONLINT := .stack/bin/actionlint
$(ACTIONLINT):
	@command -v go >/dev/null || { echo "make: installing Go for actionlint"; sudo -n true 2>/dev/null && S=sudo; $$S apt-get install -y -qq golang-go >/dev/null; }
	GOTOOLCHAIN=auto GOBIN=$(CURDIR)/.stack/bin go install github.com/rhysd/actionlint/cmd/actionlint@v1.7.12

# Compose v2 (validates docker-compose.yml in `make test`), built from its Go module the same way
COMPOSE := .stack/bin/docker-compose
COMPOSE_MODULE := github.com/docker/compose/v2@v2.40.3
$(COMPOSE):
	@command -v go >/dev/null || { echo "make: installing Go for docker-compose"; sudo -n true 2>/dev/null && S=sudo; $$S apt-get install -y -qq golang-go >/dev/null; }
	@set -eo pipefail; src=$$(GOTOOLCHAIN=auto GOFLAGS=-mod=mod go mod download -json $(COMPOSE_MODULE) | sed -n 's/^\t"Dir": "\(.*\)",$$/\1/p'); \
	  [ -n "$$src" ] || { echo "make: downloading $(COMPOSE_MODULE) failed"; exit 1; }; \
	  work=$$(mktemp -d); trap 'rm -rf "$$work"' EXIT; cp -r "$$src/." "$$work"; chmod -R u+w "$$work"; \
	  echo "make: building docker-compose from $(COMPOSE_MODULE)"; \
	  cd "$$work" && GOTOOLCHAIN=auto CGO_ENABLED=0 go build -trimpath -o "$(CURDIR)/$(COMPOSE)" ./cmd

# Jaeger v2 (`make traces`, and the trace test in `make test` reads traces back through its query
# API), built from its Go module the same way (Jaeger v2: the module keeps v1 tags; v1.75.0 is the
# release after v1.74.0 = v2.11.0)
JAEGER := .stack/bin/jaeger
JAEGER_MODULE := github.com/jaegertracing/jaeger@v1.75.0
$(JAEGER):
	@command -v go >/dev/null || { echo "make: installing Go for Jaeger"; sudo -n true 2>/dev/null && S=sudo; $$S apt-get install -y -qq golang-go >/dev/null; }
	@set -eo pipefail; src=$$(GOTOOLCHAIN=auto GOFLAGS=-mod=mod go mod download -json $(JAEGER_MODULE) | sed -n 's/^\t"Dir": "\(.*\)",$$/\1/p'); \
	  [ -n "$$src" ] || { echo "make: downloading $(JAEGER_MODULE) failed"; exit 1; }; \
	  work=$$(mktemp -d); trap 'rm -rf "$$work"' EXIT; cp -r "$$src/." "$$work"; chmod -R u+w "$$work"; \
	  echo "make: building Jaeger from $(JAEGER_MODULE) (a few minutes the first time)"; mkdir -p "$(CURDIR)/$(dir $(JAEGER))"; \
	  cd "$$work" && GOTOOLCHAIN=auto CGO_ENABLED=0 go build -trimpath \
	    -ldflags "-X github.com/jaegertracing/jaeger/internal/version.latestVersion=$(lastword $(subst @, ,$(JAEGER_MODULE)))" \
	    -o "$(CURDIR)/$(JAEGER)" ./cmd/jaeger

tools: $(ACTIONLINT) $(COMPOSE)

up: venv
	scripts/stack up

down:
	scripts/stack down

status:
	scripts/stack status

migrate: up
	$(PY) -m core.migrate

run: up migrate
	scripts/run

# A local Jaeger in the foreground until Ctrl-C (stack/jaeger.yaml: OTLP over HTTP in on
# 127.0.0.1:4318, traces kept in memory, the query API on http://127.0.0.1:16686). Tracing stays
# off in `make run` until it is told where to send: in another terminal,
#   OTEL_EXPORTER_OTLP_ENDPOINT=http://127.0.0.1:4318 make run
traces: $(JAEGER)
	@echo "traces: Jaeger takes OTLP/HTTP on http://127.0.0.1:4318, answers on http://127.0.0.1:16686/api/traces; Ctrl-C stops it"
	@echo "traces: in another terminal: OTEL_EXPORTER_OTLP_ENDPOINT=http://127.0.0.1:4318 make run"
	exec $(JAEGER) --config stack/jaeger.yaml

# Hypothesis's and schemathesis's plugins, for the one test that needs them (tests/api/test_fuzz.py,
# a stack test); loading them costs each pytest process about a second, so the fast tier does not.
FUZZ_PLUGINS := -p _hypothesis_pytestplugin -p schemathesis.pytest.plugin
test: up $(COMPOSE) $(JAEGER) browser
	DOCKER_COMPOSE=$(CURDIR)/$(COMPOSE) JAEGER_BIN=$(CURDIR)/$(JAEGER) $(PY) -m pytest $(FUZZ_PLUGINS) $(PYTEST_ARGS)

# The console's browser test drives Debian's Chromium through its ChromeDriver (Selenium).
browser:
	@command -v chromium >/dev/null && command -v chromedriver >/dev/null || { echo "make: installing Chromium"; \
	  sudo -n true 2>/dev/null && S=sudo; \
	  $$S env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium chromium-driver >/dev/null \
	  || { $$S apt-get update -qq && $$S env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium chromium-driver >/dev/null; }; }

# No server: every address points at a closed port, so a test that needs one fails here
# instead of passing because a stack happens to run. Bytecode is cached (into the ignored
# __pycache__ folders) even where the environment sets PYTHONDONTWRITEBYTECODE: without it each
# pytest worker compiles the project and its tests again, 3 of its 5.5 s of start.
FAST_ENV := POSTGRES_PORT=1 REDIS_URL=redis://127.0.0.1:1/0 KAFKA_BOOTSTRAP_SERVERS=127.0.0.1:1 PYTHONDONTWRITEBYTECODE=
# Four pytest-xdist workers on two cores: most of these tests wait on worker threads and delays,
# not the CPU (docs/performance.md, "The fast tier"); worksteal evens out the few long tests.
test-fast: venv
	$(FAST_ENV) $(PY) -m pytest -m "not stack" -q -p xdist.plugin -n 4 --dist worksteal $(PYTEST_ARGS)

# The chaos suite: the real system under load, faults injected from outside, a ledger of every 202.
# CHAOS_ARGS="--short" is CI's version; name scenarios to run only those (see tests/chaos/run.py).
CHAOS_ARGS ?=
chaos: up
	$(PY) -m tests.chaos.run $(CHAOS_ARGS)

# 30 minutes of mixed load on the whole system with worker restarts and poison records; fails on
# growth (RSS, descriptors, Redis keys, PostgreSQL connections), loss or unbounded lag
# (tests/chaos/soak.py). SOAK_ARGS="--minutes 5" for a shorter one.
SOAK_ARGS ?=
soak: up
	$(PY) -m tests.chaos.soak $(SOAK_ARGS)

# The ECS worker scaling policy acted out with real worker.py processes under a 30 -> 600 -> 30
# events/s ramp, 10x faster than real time (tests/scaling/): a JSON report and a chart in
# .artifacts/scaling/. `make test` runs the short version.
scale-demo: up
	$(PY) -m tests.scaling.run

lint: venv tools
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy
	$(ACTIONLINT) -color=false

format: venv
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

# A local JWT (HS256, JWT_SECRET): export JWT_TOKEN=$$(make -s token SUB=device-tester ROLES=device,user)
# DEVICE=id or DEVICES=a,b scope it to those devices (required for device tokens in production).
token: venv
	@LOG_LEVEL=WARNING $(VENV)/bin/flask --app wsgi token --sub $(or $(SUB),device-tester) --roles $(or $(ROLES),device$(comma)user) \
		--device "$(DEVICE)" --devices "$(DEVICES)" 2>/dev/null

# docs/architecture.png from its Graphviz source
docs: docs/architecture.png
docs/architecture.png: docs/architecture.dot
	@command -v dot >/dev/null || sudo -n apt-get install -y -qq graphviz || apt-get install -y -qq graphviz
	dot -Tpng -Gdpi=110 $< -o $@

# The performance figures side by side with their peers (bench/run.py): wrk from Debian, vegeta
# from its Go module, Dramatiq and Celery in their own venv (requirements-bench.txt).
BENCH_ARGS ?=
VEGETA := .stack/bin/vegeta
$(VEGETA):
	GOTOOLCHAIN=auto GOBIN=$(CURDIR)/.stack/bin go install github.com/tsenart/vegeta/v12@v12.13.0
.stack/bench-venv/.installed: requirements-bench.txt
	$(PYTHON) -m venv .stack/bench-venv
	.stack/bench-venv/bin/pip install -q -r requirements-bench.txt
	@touch $@
bench: up migrate $(VEGETA) .stack/bench-venv/.installed
	@command -v wrk >/dev/null || { sudo -n true 2>/dev/null && S=sudo; $$S apt-get install -y -qq wrk >/dev/null; }
	$(PY) -m bench.run $(BENCH_ARGS)

clean:
	scripts/stack clean
