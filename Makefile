# Two commands on a fresh Debian machine:
#   make run    installs everything (a .venv, the package, Debian's Fashion-MNIST) and runs the main job
#   make test   installs everything and runs the tests
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
FASHION_MNIST_DIR := /usr/share/datasets/fashion-mnist
OUTPUT_DIR ?= runs/quickstart
# The quick start's budget: a few minutes on 2 cores. Drop these flags for LTH's full settings.
RUN_FLAGS ?= --rounds=4 --iterations=1500 --train_examples=20000

.PHONY: run test data bench clean

$(STAMP): setup.cfg pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test]'
	touch $(STAMP)

# Debian packages Fashion-MNIST's four IDX files; the main job reads them offline.
data:
	@if [ -f $(FASHION_MNIST_DIR)/train-images-idx3-ubyte.gz ]; then \
	  echo "Fashion-MNIST found in $(FASHION_MNIST_DIR)"; \
	elif command -v apt-get >/dev/null 2>&1; then \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && $$SUDO apt-get install -y -qq dataset-fashion-mnist; \
	else \
	  echo "No apt-get: put Fashion-MNIST's IDX files in a folder and pass RUN_FLAGS=--data_dir=FOLDER"; \
	fi

run: $(STAMP) data
	$(PY) -m apps.imp_main --output_dir=$(OUTPUT_DIR) $(RUN_FLAGS)

test: $(STAMP)
	$(PY) -m pytest -q -n auto --dist loadscope

bench: $(STAMP) data
	$(PY) -m bench.step_time

clean:
	rm -rf $(VENV) runs
