# The two commands of the README: `make demo` (the main job on the bundled data) and
# `make test` (the test suite). Both create or refresh .venv first, from requirements/lock.txt;
# a second run reuses it. `make lock` regenerates the locks after a change in requirements/.
PY := .venv/bin/python
DEMO_ARGS ?=
PYTEST_ARGS ?=
# Test modules are spread over this many pytest-xdist worker processes (a module stays on one
# worker: its module fixtures are built once); 0 runs them in this process. They are handed
# out in the order tests/conftest.py gives them (the longest first), not xdist's default of
# the modules with the most tests first, which left the longest test alone on one core at
# the end (--no-loadscope-reorder).
TEST_WORKERS ?= 2

# The lock: every transitive package of the pins in requirements/, with hashes, for the
# machines the project runs on (CPython 3.11, x86_64 Linux, glibc >= 2.28), resolved by uv.
# Existing pins are kept where they still fit; `make lock LOCK_ARGS=--upgrade` refreshes
# the transitive packages to their newest fitting releases.
UV_VERSION := 0.13.9
LOCK_TOOLS := .cache/lock-tools
LOCK_TARGET := --python-version 3.11 --python-platform x86_64-manylinux_2_28
LOCK_ARGS ?=
UV_COMPILE = $(LOCK_TOOLS)/bin/uv pip compile --quiet --generate-hashes $(LOCK_TARGET) \
	--custom-compile-command "make lock" $(LOCK_ARGS)

.PHONY: venv demo test bazel-test benchmarks lock clean

venv:
	@bash scripts/ensure_venv.sh

demo: venv
	$(PY) -m facenet_tf.demo $(DEMO_ARGS)

test: venv
	$(PY) -m pytest -n $(TEST_WORKERS) --dist loadfile --no-loadscope-reorder $(PYTEST_ARGS)

bazel-test: venv
	bazel test //...

benchmarks: venv
	$(PY) -m benchmarks.run_all --output benchmarks/RESULTS.md

lock:
	@test -x $(LOCK_TOOLS)/bin/uv && $(LOCK_TOOLS)/bin/uv --version | grep -q " $(UV_VERSION) " \
		|| { python3 -m venv $(LOCK_TOOLS) && $(LOCK_TOOLS)/bin/pip install -q "uv==$(UV_VERSION)"; }
	$(UV_COMPILE) -o requirements/lock.txt \
		requirements/base.txt requirements/test.txt requirements/dask.txt
	$(UV_COMPILE) -o requirements/lock-gpu.txt \
		requirements/gpu.txt requirements/test.txt requirements/dask.txt

clean:
	rm -rf runs bazel-*
