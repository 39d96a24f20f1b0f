# The two README commands are `make demo` and `make test`; both set the environment up first (idempotent).
SHELL := /bin/bash
VENV ?= $(or $(FRAMEPLAN_VENV),.venv)
PY := $(VENV)/bin/python
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1

.PHONY: setup demo test test-fast lint clean

setup:
	@FRAMEPLAN_VENV=$(abspath $(VENV)) bash scripts/setup_env.sh

demo: setup
	$(VENV)/bin/frameplan demo --out out/demo

test: setup
	$(PY) -m pytest -q --durations=20

test-fast: setup
	$(PY) -m pytest -q -m "not slow"

lint: setup
	$(VENV)/bin/ruff check frameplan_core frameplan_ros frameplan_cli training tests

clean:
	rm -rf out ros2_ws/build ros2_ws/install ros2_ws/log
