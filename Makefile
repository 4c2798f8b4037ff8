# Every target creates the local virtual environment (.venv) when it is missing
# and installs the project's requirements into it; nothing outside the checkout
# is touched. PYTHON picks the interpreter the environment is made from.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: venv browser test test-portability demo serve quality benchmark clean-venv

$(STAMP): requirements.txt pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet -r requirements.txt
	$(PY) -m pip install --quiet --no-deps --no-build-isolation -e .
	touch $(STAMP)

venv: $(STAMP)

# The whole suite in a random order of modules and of the tests within each (the seed is
# printed; PYTEST_ARGS="-p random_order --random-order-seed=N" repeats one order).
PYTEST_ARGS ?= --random-order-bucket=module
test: $(STAMP) browser
	$(PY) -m pytest -q $(PYTEST_ARGS)

# Debian's Chromium for the browser test (tests/test_web.py), installed when missing and this is
# root on Debian; elsewhere the test skips and says why (under CI=true it fails instead).
browser:
	@test -x /usr/bin/chromium || { if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; \
	  else echo "no /usr/bin/chromium: 'sudo apt-get install chromium' (the browser test skips without it)"; fi; }

# The local web page on http://127.0.0.1:7860/ (HOST and PORT override).
HOST ?= 127.0.0.1
PORT ?= 7860
serve: $(STAMP)
	$(PY) scripts/serve.py --host $(HOST) --port $(PORT)

# The exactness tests under every ATEN_CPU_CAPABILITY x ONEDNN_MAX_CPU_ISA x 1/2 threads
# setting (about an hour on 2 cores); see tests/float_bounds.py.
test-portability: $(STAMP)
	bash scripts/test_portability.sh

demo: $(STAMP)
	$(PY) scripts/demo.py

# Learning quality on HSynth (docs/quality.md): hours on a CPU, reuses finished stages.
quality: $(STAMP)
	$(PY) scripts/benchmark_quality.py

# Speed and memory, plain path against every optimisation (docs/performance.md).
benchmark: $(STAMP)
	$(PY) scripts/benchmark.py --model DucoNet

clean-venv:
	rm -rf $(VENV)
