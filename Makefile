# carpool — two commands on a fresh Debian machine, as root: `make demo` and `make test`.
SHELL := /bin/bash
VENV := .venv
CARPOOL := $(VENV)/bin/carpool
PYTEST := $(VENV)/bin/python -m pytest
# Debian packages the daemon, the lab and the interop/benchmark peers need.
APT_PACKAGES := iproute2 nftables python3-nftables python3-venv iputils-ping tcpdump \
                keepalived ucarp haproxy wrk nghttp2-client chromium conntrackd conntrack

.PHONY: install demo test test-unit test-lab lint bench clean lab-down

install: .apt-stamp $(VENV)/.stamp

# Installs only what is missing; silent when everything is there.
.apt-stamp:
	@missing=$$(for p in $(APT_PACKAGES); do dpkg-query -W -f='$${Status}' $$p 2>/dev/null \
	  | grep -q 'ok installed' || echo $$p; done); \
	if [ -n "$$missing" ]; then \
	  echo "installing: $$missing"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	fi; \
	for unit in keepalived ucarp haproxy conntrackd; do systemctl disable --now $$unit >/dev/null 2>&1 || true; done; \
	touch $@

# Debian's python3 with system site packages: python3-nftables exists only there (DESIGN §7).
$(VENV)/.stamp: pyproject.toml
	@[ -x $(VENV)/bin/python ] || /usr/bin/python3 -m venv --system-site-packages $(VENV)
	@$(VENV)/bin/pip install -q --disable-pip-version-check -e '.[test,lint]'
	@touch $@

demo: install
	@trap '$(CARPOOL) lab down' EXIT; \
	$(CARPOOL) lab up && $(CARPOOL) lab status --watch 1

test: install lint
	$(PYTEST) -q --durations=25 tests  # the slowest shown: make test must stay under 20 min

# Lint (ruff: rules and format) and types (mypy: strict for ha/ and config/), before the tests.
lint: install
	$(VENV)/bin/ruff check src tests bench
	$(VENV)/bin/ruff format --check src tests bench
	$(VENV)/bin/mypy

test-unit: install
	$(PYTEST) -q tests/unit

test-lab: install
	$(PYTEST) -q tests/lab

bench: install
	$(VENV)/bin/python bench/failover.py

lab-down: install
	$(CARPOOL) lab down

clean:
	rm -rf $(VENV) .apt-stamp build src/*.egg-info .pytest_cache .hypothesis
