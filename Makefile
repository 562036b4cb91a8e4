# make run   - set up, then run RabbitMQ + gateway + example workers
# make test  - set up, then lint, type-check and run every test against a real RabbitMQ
# make bench - the benchmark harness; writes bench/RESULTS.md
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# Debian packages: the broker, curl and jq (examples), nginx and PostgreSQL (tests), and
# what each client suite lists for itself.
SYSTEM_PACKAGES := rabbitmq-server curl jq nginx postgresql $(shell cat clients/*/debian-packages.txt 2>/dev/null)

.PHONY: run test bench setup system-deps js-deps lint typecheck pytest broker-start broker-stop clean

run: setup
	deploy/run-local.sh

test: setup lint typecheck pytest

setup: system-deps $(VENV)/.installed js-deps

system-deps:
	deploy/install-system-deps.sh $(SYSTEM_PACKAGES)

# Reinstalled whenever pyproject.toml changes.
$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV) || { deploy/install-system-deps.sh python3-venv && $(PYTHON) -m venv $(VENV); }
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[server,dev]'
	touch $@

# The JS client's npm packages (ajv; playwright-core for the browser test), from its lock file.
js-deps: $(if $(wildcard clients/js/package-lock.json),clients/js/node_modules/.installed)

clients/js/node_modules/.installed: clients/js/package-lock.json
	cd clients/js && npm ci --no-audit --no-fund --loglevel=error
	touch $@

# The benchmark: every figure side by side in one run; writes bench/RESULTS.md (~12 min).
bench: setup
	deploy/install-system-deps.sh $$(cat bench/debian-packages.txt)
	$(BIN)/pip install --quiet -e '.[server,dev,bench]'
	$(BIN)/python -m bench.run

lint: setup
	$(BIN)/ruff check gateway tests examples bench
	$(BIN)/ruff format --check gateway tests examples bench

typecheck: setup
	$(BIN)/mypy

pytest: setup
	$(BIN)/pytest

broker-start:
	deploy/rabbitmq-local.sh start

broker-stop:
	deploy/rabbitmq-local.sh stop

clean: broker-stop
	rm -rf $(VENV) var .pytest_cache .mypy_cache .ruff_cache clients/js/node_modules
