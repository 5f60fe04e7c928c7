# LLM Gateway — developer commands. Everything installs into .venv.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
HOST   ?= 127.0.0.1
PORT   ?= 8080

.PHONY: run test check bench lint typecheck clean nginx-for-tests

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

# Reinstall when pyproject.toml changes.
$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e .
	touch $@

$(VENV)/.installed-dev: pyproject.toml $(VENV)/.installed
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $@

run: $(VENV)/.installed  ## start the gateway on http://127.0.0.1:8080
	$(BIN)/llm-gateway serve --host $(HOST) --port $(PORT) $(if $(CONFIG),--config $(CONFIG),)

test: $(VENV)/.installed-dev nginx-for-tests  ## run the whole test suite
	$(BIN)/python -m pytest

# The deployment tests put Debian's nginx in front of real gateway processes.
# Installed here when missing (as root, with apt); otherwise those tests skip
# with the reason (and fail in CI).
NGINX_APT = DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends
nginx-for-tests:
	@if ! command -v nginx >/dev/null 2>&1 && [ ! -x /usr/sbin/nginx ]; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    echo "installing nginx (Debian package) for the deployment tests"; \
	    { $(NGINX_APT) nginx || { apt-get update -qq && $(NGINX_APT) nginx; }; } >/dev/null 2>&1 \
	    || echo "could not install nginx: the deployment tests will skip"; \
	  else echo "nginx is not installed: the deployment tests will skip"; fi; \
	fi

lint: $(VENV)/.installed-dev
	$(BIN)/ruff check src tests bench
	if [ -x $(BIN)/hadolint ]; then $(BIN)/hadolint deploy/Dockerfile; fi
	$(BIN)/check-jsonschema --builtin-schema vendor.compose-spec deploy/docker-compose.yml

typecheck: $(VENV)/.installed-dev
	$(BIN)/mypy

check: lint typecheck test  ## ruff + mypy + tests, as CI

bench: $(VENV)/.installed-dev  ## direct vs gateway throughput and latency
	$(BIN)/python bench/run.py

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache .bench
