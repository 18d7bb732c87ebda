# rgpt4d: two commands do all set-up on a fresh machine.
#   make demo   - the whole product on the embedded default (CPU, local Ray, synthetic 4D world)
#   make test   - lint + type check + the test suite
PYTHON ?= python3.11
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

export RAY_AUTH_MODE ?= disabled
export RAY_USAGE_STATS_ENABLED ?= 0
export HF_HUB_OFFLINE ?= 1
export TRANSFORMERS_OFFLINE ?= 1
export TOKENIZERS_PARALLELISM ?= false
export PYTHONUNBUFFERED ?= 1

.PHONY: install browser demo test lint unit bench clean

# One pip call with torch==2.13.0 inside the same resolve (pyproject pins it): never a CUDA build.
$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check -e '.[test]'
	touch $(STAMP)

install: $(STAMP) browser

# Debian's chromium + chromedriver for the page's browser test (tests/test_serve_ui.py). Idempotent; non-fatal
# (without root or apt the test skips, saying why).
browser:
	@(command -v chromium >/dev/null && command -v chromedriver >/dev/null) || \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null) || \
	  echo "warning: could not install chromium + chromium-driver; tests/test_serve_ui.py will be skipped"

demo: $(STAMP)
	$(PY) -m pipelines.demo $(ARGS)

lint: $(STAMP)
	$(VENV)/bin/ruff check rgpt4d_core pipelines tests bench scripts
	$(VENV)/bin/mypy

unit: $(STAMP) browser
	$(PY) -m pytest -q $(ARGS)

test: lint unit

bench: $(STAMP)
	for b in bench/*.py; do $(PY) $$b || exit 1; done

clean:
	rm -rf $(VENV) out runs .pytest_cache .mypy_cache .ruff_cache
