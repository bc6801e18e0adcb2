# The README's two commands are `make demo` and `make test`; both install first.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
DEMO := build/demo

.PHONY: install demo test bench clean

install: $(STAMP)

# tensorflow-serving-api (the PredictionLog, PredictRequest, ModelServerConfig
# protos and the gRPC stub) and tf-keras (for the tests' notebook reference,
# which uses tf.compat.v1.layers) go in with --no-deps: their dependency on the
# "tensorflow" distribution would otherwise install the full package over
# tensorflow-cpu. Their other dependencies (grpcio, protobuf) come with it.

$(STAMP): pyproject.toml Makefile
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test]'
	$(PY) -m pip install --quiet --no-deps 'tensorflow-serving-api>=2.21,<2.22' 'tf-keras>=2.21,<2.22'
	touch $(STAMP)

demo: install
	$(PY) -m exportkit.fresh_checkpoint $(DEMO)/resnet18_model_dir --plugin models.resnet --model resnet --set size=18
	$(PY) run_export.py checkpoint.path=$(DEMO)/resnet18_model_dir model.size=18 export.root=$(DEMO)/exports hydra.run.dir=$(DEMO)/outputs/run

test: install
	$(PY) -m pytest -q

# The serving benchmark (issue 7) at its defaults: ResNet-50, batches 1, 8, 32,
# against the notebook export and OpenVINO; results in build/bench/.
bench: install
	$(PY) -m pip install --quiet -e '.[bench]'
	$(PY) benchmarks/serving.py

clean:
	rm -rf $(DEMO) outputs multirun exports
