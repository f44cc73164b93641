# The README's Quickstart: `make quickstart` (the main job) and `make test`.
# Both install what they need first (.ci/setup), into the Python on PATH.
PYTHON ?= python3
export PYTHON

.PHONY: setup quickstart test
setup:
	bash .ci/setup

quickstart: setup
	$(PYTHON) examples/quickstart.py

test: setup
	$(PYTHON) -m pytest -q tests
