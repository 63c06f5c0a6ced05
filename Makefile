# The two commands a newcomer needs (README "Quick start"):
#   make demo   set up a virtualenv and run the one-minute demo (needs nothing else on the machine)
#   make test   install what the tests need (Python packages; Debian's prometheus, openssh-server,
#               curl, jq, openssl)
#               and run ruff, mypy and pytest; the tests start every server they use (Prometheus,
#               sshd, moto's server, local stand-ins) on loopback
#
# Installs are pinned by constraints.txt so CI and laptops resolve the same versions.

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# Debian packages the tests run for real: a Prometheus server, systemd-analyze for the unit file,
# an OpenSSH server for the ssh rollback adapter, and curl, jq and openssl, which the shipped CI
# snippets (config/ci/) sign their events with.
DEB_PACKAGES := prometheus systemd openssh-server curl jq openssl
DEB_BINARIES := /usr/bin/prometheus /usr/bin/systemd-analyze /usr/sbin/sshd /usr/bin/curl /usr/bin/jq /usr/bin/openssl

.PHONY: demo test lint typecheck pytest venv system-deps schema clean

demo: venv
	$(BIN)/watchdog demo

test: system-deps venv lint typecheck pytest

venv: $(BIN)/.installed

$(BIN)/.installed: pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c constraints.txt -e '.[test]'
	touch $@

system-deps:
	@missing=0; for b in $(DEB_BINARIES); do test -x $$b || missing=1; done; \
	if [ $$missing = 1 ]; then \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq --no-install-recommends $(DEB_PACKAGES); \
	fi

lint: venv
	$(BIN)/ruff check .

typecheck: venv
	$(BIN)/mypy

pytest: venv
	$(BIN)/pytest -q

# Regenerate the shipped JSON Schema after changing the config models (a test compares them).
schema: venv
	$(BIN)/watchdog schema > config/watchdog.schema.json

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
