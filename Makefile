# make run   - set up, then run RabbitMQ + gateway + example workers
# make test  - set up, then lint, type-check and run every test against a real RabbitMQ
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: run test setup broker lint typecheck pytest broker-start broker-stop clean

run: setup broker
	deploy/install-system-deps.sh curl
	deploy/run-local.sh

test: setup broker lint typecheck pytest

setup: $(VENV)/.installed

# Reinstalled whenever pyproject.toml changes.
$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV) || { deploy/install-system-deps.sh python3-venv && $(PYTHON) -m venv $(VENV); }
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $@

broker:
	deploy/rabbitmq-local.sh install

lint: setup
	$(BIN)/ruff check gateway tests examples
	$(BIN)/ruff format --check gateway tests examples

typecheck: setup
	$(BIN)/mypy

pytest: setup broker
	$(BIN)/pytest

broker-start:
	deploy/rabbitmq-local.sh start

broker-stop:
	deploy/rabbitmq-local.sh stop

clean: broker-stop
	rm -rf $(VENV) var .pytest_cache .mypy_cache .ruff_cache
