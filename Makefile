# The README's two commands are `make demo` and `make test`; both install first.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
DEMO := build/demo

.PHONY: install demo test clean

install: $(STAMP)

$(STAMP): pyproject.toml Makefile
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test]'
	# The notebook reference in the tests needs legacy Keras; without --no-deps it
	# would pull the "tensorflow" distribution over tensorflow-cpu.
	$(PY) -m pip install --quiet --no-deps 'tf-keras>=2.21,<2.22'
	touch $(STAMP)

demo: install
	$(PY) -m exportkit.fresh_checkpoint $(DEMO)/resnet18_model_dir --plugin models.resnet --model resnet --set size=18
	$(PY) run_export.py checkpoint.path=$(DEMO)/resnet18_model_dir model.size=18 export.dir=$(DEMO)/exports/resnet hydra.run.dir=$(DEMO)/outputs/run

test: install
	$(PY) -m pytest -q

clean:
	rm -rf $(DEMO) outputs multirun exports
