# Two commands: `make run` (the main job) and `make test`.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python

.PHONY: run test bench protos compose-deps compose-test clean

# torch is pinned here, before the project, so that the package's own range
# (torch>=2.3) is already satisfied and pip never fetches a CUDA build.
$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet torch==2.13.0
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $@

run: $(VENV)/.installed
	$(VENV)/bin/asyncps run

# The compare report's test opens the page in headless Chromium: Debian's
# package, installed here if missing (apt-get: as root).
test: $(VENV)/.installed
	@command -v chromium >/dev/null 2>&1 || { \
	    echo "installing chromium (apt-get) for the report's browser test"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; } || { \
	    echo "make test: could not install chromium; install Debian's chromium package (as root) and retry" >&2; \
	    exit 1; }
	$(PY) -m pytest

protos: $(VENV)/.installed
	PYTHON=$(PY) protos/gen.sh

# Every benchmark runs; then, if any missed a target (or failed), make fails naming them.
bench: $(VENV)/.installed
	@missed=; for bench in optim_bench ps_local_bench sim_bench grpc_bench cluster_bench ray_bench hogwild_bench; do \
		echo "$(PY) benchmarks/$$bench.py"; \
		$(PY) benchmarks/$$bench.py || missed="$$missed $$bench"; \
	done; \
	if [ -n "$$missed" ]; then echo "make bench: targets MISSED (or the benchmark failed) in:$$missed"; exit 1; fi

# What `docker-compose build` starts from, made once (needs root, on Debian):
# the base image from Debian's packages, deploy/.wheelhouse, and the image of
# the dependencies installed from it with no network.
compose-deps:
	bash deploy/compose-deps.sh

# README.md's docker-compose commands end to end, on a Docker engine of its
# own in a network namespace of its own (installed if missing): the build
# offline, a shard crashed, the run's accuracy checked (needs root).
compose-test:
	bash deploy/compose-test.sh

clean:
	rm -rf $(VENV) runs
