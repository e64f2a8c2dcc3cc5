# Two entry points for newcomers: `make demo` (set up + dvc repro on the default data) and `make check` (every test).
VENV    ?= .venv
PYTHON  ?= python3
BIN     := $(VENV)/bin
STAMP   := $(VENV)/.stemsift-installed
NODE    := node_modules/.stemsift-installed
SUDO    := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: setup demo curate test check bench smoke sweep detect evidence worlds harm exps exps-refine clean-data

setup: $(STAMP) $(NODE)

# playwright-core, pinned by package-lock.json, into ./node_modules (git-ignored); no browser download.
$(NODE): package.json package-lock.json $(STAMP)
	PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 npm ci --no-audit --no-fund --loglevel=error
	touch $(NODE)

# ffmpeg: stempeg reads .stem.mp4 through it, and `import museval` needs ffmpeg/ffprobe on PATH.
# chromium + node/npm: the listening report's tests drive Debian's chromium with playwright-core (npm, into
# ./node_modules; PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD: no browser build is downloaded).
$(STAMP): pyproject.toml requirements.txt constraints.txt
	@command -v ffmpeg >/dev/null && command -v ffprobe >/dev/null && command -v chromium >/dev/null && \
	  command -v node >/dev/null && command -v npm >/dev/null || \
	  ($(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq --no-install-recommends \
	    ffmpeg chromium fonts-dejavu-core $$(command -v npm >/dev/null || echo nodejs npm) >/dev/null)
	@# postgresql: the MLflow-server test runs a throwaway cluster (initdb/postgres from /usr/lib/postgresql/*/bin).
	@ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || \
	  ($(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq --no-install-recommends postgresql >/dev/null)
	@[ -x $(BIN)/python ] || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -r requirements.txt -c constraints.txt -e '.[test]'
	@# tinysoundfont declares pyaudio (playback only), which does not build here.
	$(BIN)/python -m pip install -q --no-deps tinysoundfont==0.3.7
	$(BIN)/dvc config core.analytics false
	touch $(STAMP)

demo: setup
	PATH=$(CURDIR)/$(BIN):$$PATH $(BIN)/dvc repro
	$(BIN)/stemsift query --examples --rows 8
	$(BIN)/stemsift report

# Your own folder, curated without training a separator (curate/dvc.yaml): make curate DATA=/path/to/musdb18hq
# (CURATE_ARGS: e.g. --format csv, --cleaners fad leak blind); outputs under curate/.
curate: setup
	@[ -n "$(DATA)" ] || { echo "make curate: error: give the folder to curate, e.g. make curate DATA=/path/to/musdb18hq" >&2; exit 2; }
	PATH=$(CURDIR)/$(BIN):$$PATH $(BIN)/stemsift curate $(DATA) $(CURATE_ARGS)

# Two pytest workers, one torch thread each (tests/conftest.py); a test file stays on one worker (loadfile).
# `make test`: the suite without the end-to-end runs (the 6-minute loop while developing);
# `make smoke`: the end-to-end runs (marked slow: dvc repro / queued experiments / curate / harm / kill / server queue
# in temporary copies), the two longest first, one per worker; `make check`: both, what CI runs (.ci/run).
test: setup
	PATH=$(CURDIR)/$(BIN):$$PATH $(BIN)/python -m pytest -q -n 2 --dist loadfile -m "not slow"

smoke: setup
	PATH=$(CURDIR)/$(BIN):$$PATH $(BIN)/python -m pytest -q -n 2 --dist loadfile --no-loadscope-reorder -m slow

check: test smoke

# The grid: 4 cleaners x 3 keep ratios as queued DVC experiments, then the table and the plots.
# SWEEP_ARGS adds overrides, e.g. make sweep SWEEP_ARGS="-S 'train.seeds=[0]'" (half the time).
sweep: export MLFLOW_TRACKING_URI ?= sqlite:///$(CURDIR)/mlflow.db
sweep: export STEMSIFT_CACHE ?= $(CURDIR)/.stemsift-cache
sweep: setup
	@# the lock the experiments start from must name only objects in this cache (DVC's run-cache restore reads it)
	PATH=$(CURDIR)/$(BIN):$$PATH $(BIN)/dvc repro filter
	PATH=$(CURDIR)/$(BIN):$$PATH $(BIN)/dvc exp run --queue -S 'score.cleaner=random,fad,mlp,confident' -S 'filter.ratio=0.5,0.75,0.9' $(SWEEP_ARGS)
	PATH=$(CURDIR)/$(BIN):$$PATH $(BIN)/dvc queue start -j 1
	@until ! PATH=$(CURDIR)/$(BIN):$$PATH $(BIN)/dvc queue status | grep -qE 'Queued|Running'; do sleep 20; done
	$(MAKE) exps
	PATH=$(CURDIR)/$(BIN):$$PATH $(BIN)/stemsift sweep
	PATH=$(CURDIR)/$(BIN):$$PATH $(BIN)/dvc plots show -o metrics/sweep/plots

# Every cleaner's detection on the other contamination presets: one DVC experiment each, run up to the score
# stage only (no separator beyond the baseline), then metrics/detection/<preset>.json (mixed is the workspace's).
DETECT_PRESETS ?= effects
detect: export MLFLOW_TRACKING_URI ?= sqlite:///$(CURDIR)/mlflow.db
detect: export STEMSIFT_CACHE ?= $(CURDIR)/.stemsift-cache
detect: setup
	@for p in $(DETECT_PRESETS); do \
	  PATH=$(CURDIR)/$(BIN):$$PATH $(BIN)/dvc exp run --temp -n detect-$$p -S contaminate.preset=$$p $(DETECT_ARGS) score || exit 1; done
	PATH=$(CURDIR)/$(BIN):$$PATH $(BIN)/stemsift detection

# Table 1 (mixed) and Table 2 (effects): the evidence.scale grid (params.yaml) as queued DVC experiments, read back
# song by song -> metrics/evidence.json, metrics/evidence/<preset>.csv. Resumable: finished experiments are skipped.
# EVIDENCE_SCALE=gpu for the full grid (on a GPU machine), tiny for a smoke run.
evidence: export MLFLOW_TRACKING_URI ?= sqlite:///$(CURDIR)/mlflow.db
evidence: export STEMSIFT_CACHE ?= $(CURDIR)/.stemsift-cache
evidence: setup
	PATH=$(CURDIR)/$(BIN):$$PATH $(BIN)/stemsift evidence $(if $(EVIDENCE_SCALE),--scale $(EVIDENCE_SCALE))

# The worlds table: every separator-free cleaner in every world of params.yaml `worlds` over worlds.draws draws
# (bench/bench_worlds.py -> metrics/worlds.json); the Debian SoundFonts the worlds use are installed first.
worlds: setup
	@ls /usr/share/sounds/sf3/MuseScore_General_Lite.sf3 /usr/share/sounds/sf2/FluidR3_GM.sf2 >/dev/null 2>&1 || \
	  ($(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq --no-install-recommends \
	    musescore-general-soundfont-small fluid-soundfont-gm >/dev/null)
	PATH=$(CURDIR)/$(BIN):$$PATH $(BIN)/python bench/bench_worlds.py $(WORLDS_ARGS)

# The harm table: oracle songs + one defect kind's songs against the oracle alone, Δ SDR with paired intervals over
# seeds and songs (bench/bench_harm.py -> metrics/harm.json, metrics/harm.md); HARM_ARGS, e.g. --steps 400 --seeds 0.
harm: setup
	PATH=$(CURDIR)/$(BIN):$$PATH $(BIN)/python bench/bench_harm.py $(HARM_ARGS)

# A readable `dvc exp show`: the swept params and the headline metrics only (EXPS_ARGS=-A: every commit's experiments).
EXP_KEEP := Experiment|State|score.cleaner|filter.ratio|filter.mode|train.labels|train.method|cleaned_songs|clean_share|gain_db|gap_closed|separation.json:cleaned.sdr_avg$$
exps: setup
	COLUMNS=200 PATH=$(CURDIR)/$(BIN):$$PATH $(BIN)/dvc exp show --no-pager $(EXPS_ARGS) --drop '.*' --keep '$(EXP_KEEP)'

# refined labels and MixIT: classifier table (noisy / iter1 / iter2 / clean) and SDR per set, MixIT's FUSS scores
EXP_KEEP_REFINE := Experiment|refine.threshold|train.labels|train.method|train.mixit.assignment|train.mixit.sparsity|train.mixit.semantic|(noisy|iter1|iter2|clean).all.exact_match|separation.json:(baseline|cleaned|refined|oracle).sdr_avg$$|cleaned.si_snri|cleaned.sdr_oraclemap_avg
exps-refine: setup
	COLUMNS=250 PATH=$(CURDIR)/$(BIN):$$PATH $(BIN)/dvc exp show --no-pager -A --drop '.*' --keep '$(EXP_KEEP_REFINE)'

bench: setup
	$(BIN)/python bench/bench_data.py
	$(BIN)/python bench/bench_train.py
	$(BIN)/python bench/bench_evaluate.py
	$(BIN)/python bench/bench_embed.py
	PATH=$(CURDIR)/$(BIN):$$PATH $(BIN)/dvc repro embed && $(BIN)/python bench/bench_clean.py
	$(BIN)/python bench/bench_classify.py
	$(BIN)/python bench/bench_mixit.py

clean-data:
	rm -rf data/audit reports/listen data/raw data/contaminated data/embeddings data/scores data/selections data/filtered data/refined data/runs data/catalogue.duckdb models .stemsift-cache
	rm -rf curate/data curate/reports curate/metrics curate/exports curate/dvc.lock
