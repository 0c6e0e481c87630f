# Two entry points: `make demo` (the default config, end to end) and `make test`.
# Both create .venv from the pinned requirements.lock and rebuild it when the lock changes.
PYTHON ?= python3
VENV := .venv
STAMP := $(VENV)/.installed
CORES ?= 2

.PHONY: demo test bench lint clean

$(STAMP): requirements.lock pyproject.toml
	test -x $(VENV)/bin/python || $(PYTHON) -m venv $(VENV)
	$(VENV)/bin/python -m pip install --quiet --upgrade pip
	$(VENV)/bin/python -m pip install --quiet -r requirements.lock
	$(VENV)/bin/python -m pip install --quiet --no-deps -e .
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/snakemake --cores $(CORES) --configfile config.yaml
	@echo "Metrics: results/*/metrics.csv  Figures: results/*/figures/"

# one pytest worker per core; a file's tests stay on one worker, so its module fixtures are built once
test: $(STAMP)
	$(VENV)/bin/python -m pytest -q -n $(CORES) --dist loadfile tests

bench: $(STAMP)
	$(VENV)/bin/python benchmarks/run_all.py $(BENCH_ARGS)

lint: $(STAMP)
	$(VENV)/bin/snakemake --lint --configfile config.yaml

clean:
	rm -rf results/* results/.checkpoints .snakemake
