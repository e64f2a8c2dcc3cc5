# Two entry points for newcomers: `make demo` (set up + dvc repro on the default data) and `make test`.
VENV    ?= .venv
PYTHON  ?= python3
BIN     := $(VENV)/bin
STAMP   := $(VENV)/.stemsift-installed
SUDO    := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: setup demo test test-fast bench smoke clean-data

setup: $(STAMP)

# ffmpeg: stempeg reads .stem.mp4 through it, and `import museval` needs ffmpeg/ffprobe on PATH.
$(STAMP): pyproject.toml requirements.txt
	@command -v ffmpeg >/dev/null && command -v ffprobe >/dev/null || \
	  ($(SUDO) apt-get update -qq && $(SUDO) apt-get install -y -qq --no-install-recommends ffmpeg >/dev/null)
	@[ -x $(BIN)/python ] || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -r requirements.txt -e '.[test]'
	@# tinysoundfont declares pyaudio (playback only), which does not build here.
	$(BIN)/python -m pip install -q --no-deps tinysoundfont==0.3.7
	$(BIN)/dvc config core.analytics false
	touch $(STAMP)

demo: setup
	PATH=$(CURDIR)/$(BIN):$$PATH $(BIN)/dvc repro
	$(BIN)/stemsift query --examples --rows 8
	$(BIN)/stemsift report

test: setup
	PATH=$(CURDIR)/$(BIN):$$PATH $(BIN)/python -m pytest -q

test-fast: setup
	PATH=$(CURDIR)/$(BIN):$$PATH $(BIN)/python -m pytest -q -m "not slow"

# Smoke-train (demucs' pattern): the whole pipeline with tiny params in a temporary copy of the repo.
smoke: setup
	PATH=$(CURDIR)/$(BIN):$$PATH $(BIN)/python -m pytest -q -m slow

bench: setup
	$(BIN)/python bench/bench_data.py
	$(BIN)/python bench/bench_train.py
	$(BIN)/python bench/bench_evaluate.py

clean-data:
	rm -rf data/raw data/contaminated data/selections data/runs data/catalogue.duckdb models .stemsift-cache
