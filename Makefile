# `make demo` and `make test` work on a fresh machine: they create .venv first.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
SAMPLE := data/sample/interactions.parquet

export PREFECT_SERVER_ANALYTICS_ENABLED ?= false
export DO_NOT_TRACK ?= 1

.PHONY: setup demo cluster-demo sample test test-fast lint format clean report-shot

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e ".[dev,ann]"
	# Prefect's database (PREFECT_HOME, ~/.prefect by default), created once here rather
	# than by the first run's temporary API, and its block types registered (one boot of
	# the temporary API)
	$(BIN)/prefect server database upgrade -y >/dev/null
	$(BIN)/python -m flows.temporary_api
	touch $@

$(SAMPLE): | setup
	$(BIN)/recsys generate --output $(SAMPLE)

sample: $(SAMPLE)

demo: setup $(SAMPLE)
	$(BIN)/recsys run --config configs/demo.yaml

# the demo's config scored on a Dask cluster started for it on this machine (loopback only):
# a Prefect server, a scheduler and two workers, each a process of its own, all stopped
# after the run (docs/operations.md, "A cluster you can try")
cluster-demo: setup $(SAMPLE)
	$(BIN)/python -m flows.cluster_demo --config configs/demo.yaml --output data/outputs/cluster-demo

# report.html as a person sees it: a small run rendered by headless Chromium (apt-get install
# chromium) to data/outputs/report-1400.png (desktop) and report-390.png (phone)
report-shot: setup
	$(BIN)/python -m benchmarks.report_shot --output data/outputs

# two test processes (pytest-xdist): most tests wait on real processes (recsys run, Prefect
# servers), so two share two cores well; each has its own Prefect test harness
test: setup
	$(BIN)/python -m pytest -q -n 2

test-fast: setup
	$(BIN)/python -m pytest -q -m "not slow"

lint: setup
	$(BIN)/ruff check recsys flows tests benchmarks
	$(BIN)/ruff format --check recsys flows tests benchmarks

format: setup
	$(BIN)/ruff format recsys flows tests benchmarks
	$(BIN)/ruff check --fix recsys flows tests benchmarks

clean:
	rm -rf data/outputs data/sample .pytest_cache
