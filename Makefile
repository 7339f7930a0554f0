# Two commands do everything on a fresh machine (Python 3.11, package registries reachable):
#   make repro   set up .venv from the pinned lock, then run the pipeline (dvc repro) on the embedded default
#   make test    set up .venv (with the Spark extra), then run ruff and the whole test suite
#   make ui      the MLflow UI of the tracking store on 127.0.0.1:5000; prints the address of its runs view
#   make serve   the champion behind `mlflow models serve` on http://127.0.0.1:5001/invocations
PYTHON ?= python3.11
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
export PATH := $(abspath $(BIN)):$(PATH)
export MLFLOW_DISABLE_TELEMETRY := true
export TF_CPP_MIN_LOG_LEVEL := 3
export GX_ANALYTICS_ENABLED := false
export PIP_DISABLE_PIP_VERSION_CHECK := 1

SPARK  := $(VENV)/.spark-installed

.PHONY: setup setup-spark repro realdata dg22 compare test lint bench ui serve clean

$(STAMP): pyproject.toml requirements.lock
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet pip==26.3
	$(BIN)/python -m pip install --quiet -r requirements.lock
	$(BIN)/python -m pip install --quiet --no-deps --no-build-isolation -e .
	touch $(STAMP)

setup: $(STAMP)

# the optional Spark extra (pyspark; needs Java 17+): `rrlfeh score --engine spark`
$(SPARK): $(STAMP) requirements-spark.lock
	$(BIN)/python -m pip install --quiet -r requirements-spark.lock
	touch $(SPARK)

setup-spark: $(SPARK)

repro: setup
	$(BIN)/dvc repro
	@$(BIN)/rrlfeh summary

# The real data sets of ../shared/data, each a named DVC experiment with the parameters of
# experiments/<name>.params (a rerun replaces it). realdata: the Gaia DR3 epoch photometry;
# dg22: the DG22 pre-folded curves (no periods).
define experiment
	@test -f ../shared/data/$(2) || { echo "make $(1): needs ../shared/data/$(2) beside the \
	repository"; exit 1; }
	@$(BIN)/dvc exp remove $(1) >/dev/null 2>&1 || true  # a rerun replaces it (quietly)
	$(BIN)/dvc exp run -n $(1) $$(sed -e '/^#/d' -e '/^$$/d' -e 's/^/-S /' experiments/$(3).params)
	@$(BIN)/rrlfeh summary
endef

realdata: setup
	$(call experiment,gaia-dr3,gaia_dr3/epoch_photometry.parquet,gaia_dr3)

dg22: setup
	$(call experiment,dg22,dg22/lc_dev_g.tar.gz,dg22)

# the headline of the default run and the experiments side by side (reports/headline.json)
compare: setup
	@$(BIN)/rrlfeh compare

lint: setup
	$(BIN)/ruff check src tests benchmarks

test: setup setup-spark lint
	$(BIN)/pytest -q -ra --durations=15 -n 2 --dist loadfile

# the last two need the default run's champion and data/raw (make repro first); the second
# score.py the real-data champion (make realdata first; skipped without it)
bench: setup setup-spark
	$(BIN)/python benchmarks/period_search.py
	$(BIN)/python benchmarks/template_phi31.py
	$(BIN)/python benchmarks/preprocess.py
	$(BIN)/python benchmarks/train.py
	$(BIN)/python benchmarks/score.py --ensemble champion
	$(BIN)/python benchmarks/score.py --ensemble champion --raw-stars 0 --skip-missing \
	  --model-uri models:/rrl-feh-gaia-dr3@champion  # the Gaia catalogue case (make realdata)
	$(BIN)/python benchmarks/chunk_sizes.py
	$(BIN)/python benchmarks/ensemble_engines.py --ensemble champion
	$(BIN)/python benchmarks/serve_latency.py --ensemble champion
	$(BIN)/python benchmarks/serve_load.py --project .
	$(BIN)/python benchmarks/spark_score.py --project .
	$(BIN)/python benchmarks/dr3_scale.py --project .

UI_PORT ?= 5000
ui: setup
	$(BIN)/rrlfeh ui --port $(UI_PORT)

SERVE_PORT ?= 5001
MODEL ?= models:/rrl-feh@champion
serve: setup
	MLFLOW_TRACKING_URI=sqlite:///$(CURDIR)/mlflow.db $(BIN)/mlflow models serve -m $(MODEL) \
	  --env-manager local -h 127.0.0.1 -p $(SERVE_PORT)

clean:
	rm -rf $(VENV)
