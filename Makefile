# CodeAlign on ROS 2. `make demo` and `make test` set everything up on first use.
SHELL := /bin/bash
.SHELLFLAGS := -eo pipefail -c
# Keep DDS discovery on this machine unless the caller chose otherwise.
export ROS_AUTOMATIC_DISCOVERY_RANGE ?= LOCALHOST
export PYTHONUNBUFFERED := 1
RUN := source ./env.sh &&

.PHONY: setup test demo bench clean help

help:  ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | sed -E 's/:.*## /\t/'

setup:  ## create .venv (pinned), build codealign_msgs + codealign_ros into install/ (cached)
	@bash tools/setup.sh

test: setup  ## run the whole test suite
	$(RUN) python -m pytest $(PYTEST_ARGS)

demo: setup  ## run the main demo on the embedded default
	$(RUN) codealign demo

bench: setup  ## benchmarks; results in benchmarks/results/ (see README)
	$(RUN) python benchmarks/bench_data.py

clean:  ## remove build products (keeps .venv)
	rm -rf build install log .pytest_cache .hypothesis
