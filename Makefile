# Two commands on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: install demo test lint bench clean

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check -e ".[test]"
	# torchattacks pins requests~=2.25 (clashing with selenium): --no-deps; the APGD/FAB
	# comparisons in tests/attacks need it
	$(PY) -m pip install -q --disable-pip-version-check --no-deps torchattacks==3.5.1
	$(PY) -c "import torch, torchvision; print('torch', torch.__version__, 'torchvision', torchvision.__version__)"
	touch $(STAMP)

# The main job: attack and defense sweeps on the built-in digits data, then the HTML report
# (`robustkit demo` = `robustkit sweep attacks/digits.toml defenses/digits.toml --out reports/demo`).
# Rerunning skips finished cells (an interrupted demo resumes where it stopped).
demo: $(STAMP)
	$(VENV)/bin/robustkit demo

test: $(STAMP)
	$(PY) -m pytest -q tests robustkit --doctest-modules

lint: $(STAMP)
	$(VENV)/bin/ruff check robustkit tests benchmarks
	$(VENV)/bin/mypy robustkit

bench: $(STAMP)
	$(PY) -m pip install -q -e ".[bench]"
	$(PY) -m pip install -q --no-deps torchattacks==3.5.1
	$(PY) benchmarks/train.py
	$(PY) benchmarks/attacks.py
	$(PY) benchmarks/defenses.py --quick

clean:
	rm -rf $(VENV) .pytest_cache
