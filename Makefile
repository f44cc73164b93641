# The README's Quickstart: `make quickstart` (the main job) and `make test`.
# Both install what they need first (.ci/setup), into the Python on PATH.
PYTHON ?= python3
export PYTHON

.PHONY: setup quickstart test test-backends
setup:
	bash .ci/setup

quickstart: setup
	$(PYTHON) examples/quickstart.py

# Two test processes: most of a test's time is single-threaded (Python, tracing,
# process start-up), so two overlap well even on two cores (more thrash there).
# `loadgroup`: tests marked `xdist_group` run on one worker (sharing a fixture).
TEST_WORKERS ?= 2

test: setup
	$(PYTHON) -m pytest -q -n $(TEST_WORKERS) --dist loadgroup tests

# The losses on Keras's JAX and PyTorch backends (tests/backends, which
# `make test` runs on TensorFlow): one process per backend.
test-backends: setup
	bash .ci/setup-backends
	KERAS_BACKEND=jax $(PYTHON) -m pytest -q -p no:cacheprovider tests/backends
	KERAS_BACKEND=torch $(PYTHON) -m pytest -q -p no:cacheprovider tests/backends
