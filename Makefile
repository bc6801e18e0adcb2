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
	$(PY) -m exportkit.fresh_checkpoint $(DEMO)/resnet18_model_dir --model resnet --set size=18
	$(PY) run_export.py checkpoint.path=$(DEMO)/resnet18_model_dir model.size=18 export.root=$(DEMO)/exports hydra.run.dir=$(DEMO)/outputs/run

# The suite under this machine's own TF runtime, then the tests marked `runtime`
# (NCHW, bf16, the graph rewrites) again under the other one: TF_ENABLE_ONEDNN_OPTS=0
# is what an AVX2-only server runs, =1 what oneDNN CPUs run. Green here means green
# on every CPU class.
# pytest-xdist runs one worker per core (at most 4), each module on one worker so its
# module-scoped exports are made once.
PARALLEL := -n auto --maxprocesses=4 --dist loadscope

test: install
	$(PY) -m pytest -q $(PARALLEL)
	TF_ENABLE_ONEDNN_OPTS=$$($(PY) -m exportkit.runtime --opposite) $(PY) -m pytest -q $(PARALLEL) -m runtime

# The serving benchmark (issue 7) at its defaults: ResNet-50, batches 1, 8, 32,
# against the notebook export and OpenVINO; results in build/bench/.
bench: install
	$(PY) -m pip install --quiet -e '.[bench]'
	$(PY) benchmarks/serving.py

clean:
	rm -rf $(DEMO) outputs multirun exports
