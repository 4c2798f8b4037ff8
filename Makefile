# Every target creates the local virtual environment (.venv) when it is missing
# and installs the project's requirements into it; nothing outside the checkout
# is touched. PYTHON picks the interpreter the environment is made from.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: venv test demo quality benchmark clean-venv

$(STAMP): requirements.txt pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet -r requirements.txt
	$(PY) -m pip install --quiet --no-deps --no-build-isolation -e .
	touch $(STAMP)

venv: $(STAMP)

test: $(STAMP)
	$(PY) -m pytest -q

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
