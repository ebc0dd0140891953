# One entry point for people and CI: `make up` runs the stack, `make test` runs every check
# (`make check` is the fast subset for the edit-test loop).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
VLLM_VENV := .venv-vllm
VLLM_STAMP := $(VLLM_VENV)/.installed
# The CUDA build of vLLM where there is an NVIDIA GPU, the CPU build elsewhere.
VLLM_REQUIREMENTS ?= $(if $(shell command -v nvidia-smi 2>/dev/null),launch/requirements-vllm-gpu.txt,launch/requirements-vllm-cpu.txt)
# Wheels that pip finds through PIP_FIND_LINKS (torch's CPU build on some machines) are offered to uv too.
FIND_LINKS := $(foreach dir,$(PIP_FIND_LINKS),--find-links $(dir))

.PHONY: install vllm-env browser redis postgres speech up test check lint typecheck unit bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade uv
	$(BIN)/uv pip install --quiet --python $(BIN)/python -e '.[dev,launch,video]'
	touch $(STAMP)

$(VLLM_STAMP): $(VLLM_REQUIREMENTS) launch/vllm-overrides.txt | $(STAMP)
	@echo "installing vLLM into $(VLLM_VENV) from $(VLLM_REQUIREMENTS) (first time: a few minutes, ~3.5 GB)"
	$(BIN)/uv venv --quiet --allow-existing --python $(PYTHON) $(VLLM_VENV)
	$(BIN)/uv pip install --python $(VLLM_VENV)/bin/python -r $(VLLM_REQUIREMENTS) \
		--override launch/vllm-overrides.txt $(FIND_LINKS)
	touch $(VLLM_STAMP)

install: $(STAMP)

vllm-env: $(VLLM_STAMP)

# The page's end-to-end tests drive Debian's Chromium (no browser can be downloaded by Playwright here).
browser:
	@command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1 || \
	{ if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
		apt-get install -y -q chromium >/dev/null || { apt-get update -q >/dev/null && apt-get install -y -q chromium >/dev/null; }; \
	else echo "Chromium is not installed: the browser tests will be skipped"; fi; }

# Shared-limit tests run a real Redis (Debian's redis-server), installed the same way.
redis:
	@command -v redis-server >/dev/null 2>&1 || \
	{ if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
		apt-get install -y -q redis-server >/dev/null || { apt-get update -q >/dev/null && apt-get install -y -q redis-server >/dev/null; }; \
	else echo "redis-server is not installed and cannot be installed here: the shared-limit tests will fail"; fi; }

# The shared-store tests run a real PostgreSQL (Debian's server binaries), installed the same way.
postgres:
	@command -v initdb >/dev/null 2>&1 || ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || \
	{ if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
		apt-get install -y -q postgresql >/dev/null || { apt-get update -q >/dev/null && apt-get install -y -q postgresql >/dev/null; }; \
	else echo "PostgreSQL is not installed and cannot be installed here: the shared-store tests will fail"; fi; }

# The soundtrack tests speak with Debian's espeak-ng (test speech made locally), installed the same way.
speech:
	@command -v espeak-ng >/dev/null 2>&1 || \
	{ if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
		apt-get install -y -q espeak-ng >/dev/null || { apt-get update -q >/dev/null && apt-get install -y -q espeak-ng >/dev/null; }; \
	else echo "espeak-ng is not installed and cannot be installed here: the soundtrack tests will fail"; fi; }

up: install vllm-env
	$(BIN)/launch up

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: install
	$(BIN)/mypy

test: lint typecheck vllm-env browser redis postgres speech
	$(BIN)/pytest

# The edit-test loop: lint, types, unit and service tests; no vLLM, no browser, no wheel build.
check: lint typecheck redis postgres speech
	$(BIN)/pytest -m "unit or service"

unit: install
	$(BIN)/pytest -m unit

bench: install
	$(BIN)/python -m bench.gateway
	$(BIN)/python -m bench.endpoints
	$(BIN)/python -m bench.video
	$(BIN)/python -m bench.video_tokens
	$(BIN)/python -m bench.retrieval
	$(BIN)/python -m bench.fleet
	$(BIN)/python -m bench.providers
	$(BIN)/python -m bench.routing

clean:
	rm -rf $(VENV) $(VLLM_VENV) .pytest_cache .mypy_cache .ruff_cache .launch
