# CodeAlign on ROS 2. `make demo` and `make test` set everything up on first use.
SHELL := /bin/bash
.SHELLFLAGS := -eo pipefail -c
# Keep DDS discovery on this machine unless the caller chose otherwise.
export ROS_AUTOMATIC_DISCOVERY_RANGE ?= LOCALHOST
export PYTHONUNBUFFERED := 1
RUN := source ./env.sh &&

.PHONY: setup test demo bench clean help data models paper-table

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
	$(RUN) python benchmarks/bench_models.py --profile mini --threads 1
	$(RUN) python benchmarks/bench_signing.py  # sign / verify cost and bytes of signed code maps
	$(RUN) codealign demo --frames 20 --out out/bench-demo  # rate 1.0: achieved rate, latency, bytes, CPU
	cp out/bench-demo/summary.json benchmarks/results/demo_graph.json
	$(RUN) python benchmarks/bench_realtime.py --demo out/bench-demo/summary.json  # NMS, stages, start-up, demo CPU
	$(RUN) python tools/readme_results.py  # the README's copies of models.md and realtime.md

data: setup  ## generate the mini-V2X dataset into data/mini-v2x (cached)
	$(RUN) bash tools/make_data.sh data/mini-v2x

models: data  ## retrain models/mini from nothing (all stages + ablations)
	rm -rf models/mini/checkpoints
	$(RUN) bash tools/train_models.sh models/mini

paper-table: data  ## Table-4-style results from the shipped weights into README + benchmarks/results
	$(RUN) codealign paper-table --models models/mini --data data/mini-v2x --split test --every 2
	$(RUN) codealign train --cards-only --out models/mini

clean:  ## remove build products (keeps .venv)
	rm -rf build install log .pytest_cache .hypothesis
