# The two commands of the README:
#   make run    runs the chat server demo (rtkit serve --demo)
#   make test   sets everything up and runs lint, types, docs and the whole test suite
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: run test install services testdeps systemdeps lint typecheck docs pytest bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

# The chat server of the README on memory backends, with demo logins (a random
# secret unless RTKIT_SECRET is set); open http://127.0.0.1:8000/ in two browsers.
run: install
	$(BIN)/rtkit serve --demo

services: install
	$(BIN)/python scripts/services.py

# Test dependencies outside Python, installed into git-ignored places: the official
# Socket.IO packages from the npm registry (interop and browser tests, benchmark) and
# Debian's chromium for the browser test (Playwright never downloads a browser). As root
# (CI), missing Debian packages are installed; otherwise the tests that need them skip.
NODE_DEPS := tests/node/node_modules/.rtkit-installed
CHROMIUM  ?= /usr/bin/chromium
APT_GET   := DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=300

systemdeps:
	@missing=""; \
	[ -x $(CHROMIUM) ] || missing="$$missing chromium"; \
	command -v npm >/dev/null 2>&1 || missing="$$missing nodejs npm"; \
	if [ -n "$$missing" ]; then \
		if [ "$$(id -u)" = 0 ]; then \
			echo "testdeps: installing Debian packages:$$missing"; \
			$(APT_GET) update -qq && $(APT_GET) install -y -qq $$missing; \
		else \
			echo "testdeps: missing:$$missing (apt-get install them as root)" >&2; \
		fi; \
	fi

$(NODE_DEPS): tests/node/package.json tests/node/package-lock.json | systemdeps
	@if command -v npm >/dev/null 2>&1; then \
		npm ci --prefix tests/node --no-audit --no-fund --loglevel=error && \
		touch $(NODE_DEPS); \
	else \
		echo "testdeps: npm is missing: the Node.js tests will skip" >&2; \
	fi

testdeps: systemdeps $(NODE_DEPS)

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: install
	$(BIN)/mypy

docs: install
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict --quiet --site-dir .site

# Two workers: much of the suite waits on servers, sockets and private topologies
# (each worker starts its own); PYTEST_ARGS= runs it in one process.
PYTEST_ARGS ?= -n 2
pytest: install services testdeps
	$(BIN)/python -m pytest $(PYTEST_ARGS)

test: lint typecheck docs pytest

# rtkit against its peers (the bench extra: blinker, pyee, limits, faststream), each
# benchmark an interleaved run with ratios per round; never part of `make test`.
# BENCH_ARGS=--quick for a short run; --write-docs writes the guides' tables.
bench: install services testdeps
	$(BIN)/python -m pip install --quiet -e '.[bench]'
	$(BIN)/python benchmarks/run_all.py $(BENCH_ARGS)

clean:
	rm -rf $(VENV) .site .pytest_cache .mypy_cache .ruff_cache
