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

test: $(VENV)/.installed
	$(PY) -m pytest

protos: $(VENV)/.installed
	PYTHON=$(PY) protos/gen.sh

bench: $(VENV)/.installed
	$(PY) benchmarks/optim_bench.py
	$(PY) benchmarks/ps_local_bench.py
	$(PY) benchmarks/sim_bench.py
	$(PY) benchmarks/grpc_bench.py
	$(PY) benchmarks/cluster_bench.py
	$(PY) benchmarks/ray_bench.py
	$(PY) benchmarks/hogwild_bench.py

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
