# Two commands on a fresh machine: `make demo` and `make test`. Both create .venv when missing.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
DEMO_DIR ?= workdirs/demo
DATA_DIR ?= data

export TF_CPP_MIN_LOG_LEVEL ?= 2
export TF_ENABLE_ONEDNN_OPTS ?= 0

.PHONY: demo demo-listening demo-won demo-reviews demo-playlists serve test install bench tables clean

$(STAMP): setup.cfg pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test]'
	touch $(STAMP)

install: $(STAMP)

# Generate the built-in world, prepare it, train MUSLSE (all tasks) and the baselines, evaluate, report.
demo: $(STAMP)
	$(PY) -m launch.demo --workdir=$(DEMO_DIR) --data_dir=$(DATA_DIR)

# Platt's pipeline on the same world: WMF factors, SampleCNN factor regression and direct tagging,
# recommendation (Table 6.1) and transfer (Table 6.2).
demo-listening: $(STAMP)
	$(PY) -m launch.demo_listening --workdir=workdirs/listening --data_dir=$(DATA_DIR)

# Won et al.'s tag-based retrieval: sampling methods (Table 1) and branches (Table 2), zero-shot.
demo-won: $(STAMP)
	$(PY) -m launch.demo_won --workdir=workdirs/won --data_dir=$(DATA_DIR)

# Rush et al.'s text-music embeddings from album reviews: main variant, ablations and CCA, Table 1.
demo-reviews: $(STAMP)
	$(PY) -m launch.demo_reviews --workdir=workdirs/reviews --data_dir=$(DATA_DIR)

# Lin et al.'s playlist-based tag propagation: SampleCNN baseline (eq. 1) vs proposed (eq. 3, single
# and separate heads), an r sweep (0.2, 0.4, 0.8), a search range per tag category, Table I with
# bootstrap intervals, Figs. 2-6.
demo-playlists: $(STAMP)
	$(PY) -m launch.demo_playlists --workdir=workdirs/playlists --data_dir=$(DATA_DIR)

# The upload-and-analyse page over the demo runs that exist (make demo / demo-won / demo-reviews);
# prints the address (http://127.0.0.1:8000/). launch/serve.py --workdirs=... serves other runs.
serve: $(STAMP)
	$(PY) -m launch.serve

# Test files run on TEST_WORKERS processes (pytest-xdist; each file's tests stay on one worker, so
# module fixtures are built once): 14 minutes on 2 idle cores against 19 serially. TEST_WORKERS=0
# runs them in this process.
TEST_WORKERS ?= 2
test: $(STAMP)
	XLA_FLAGS="$(XLA_FLAGS)" $(PY) -m pytest -q --durations=30 -n $(TEST_WORKERS) --dist loadfile tests

# Benchmarks against peers (LightFM and implicit are installed here on demand; never test deps).
bench: $(STAMP)
	bash launch/install_peers.sh
	$(PY) -m launch.benchmark --suite=all

clean:
	rm -rf workdirs
