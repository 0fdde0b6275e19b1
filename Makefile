# The two commands of the README: `make demo` (the main job on the bundled data) and
# `make test` (the test suite). Both create or refresh .venv first; a second run reuses it.
PY := .venv/bin/python
DEMO_ARGS ?=
PYTEST_ARGS ?=

.PHONY: venv demo test bazel-test benchmarks clean

venv:
	@bash scripts/ensure_venv.sh

demo: venv
	$(PY) -m facenet_tf.demo $(DEMO_ARGS)

test: venv
	$(PY) -m pytest $(PYTEST_ARGS)

bazel-test: venv
	bazel test //...

benchmarks: venv
	$(PY) -m benchmarks.run_all --output benchmarks/RESULTS.md

clean:
	rm -rf runs bazel-*
