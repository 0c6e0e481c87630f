# Two entry points: `make demo` (the default config, end to end) and `make test`.
# Both create .venv from the pinned requirements.lock and rebuild it when the lock changes.
# The checks CI runs (.github/workflows/ci.yml) are targets too: dryrun (after placeholders where
# ../shared is absent), lint, format-check; containerize rewrites the Dockerfile. Planning needs
# Snakemake alone, so dryrun, lint and containerize run from .venv-snakemake, which holds only
# the lock's Snakemake, as users run `snakemake --use-conda` (tests/test_planning.py uses it too).
PYTHON ?= python3
VENV := .venv
STAMP := $(VENV)/.installed
CORES ?= 2
VENV_PYTHON ?= $(VENV)/bin/python
PLANNING_VENV := .venv-snakemake
SNAKEMAKE_VERSION := $(shell sed -n 's/^snakemake==//p' requirements.lock)
PLANNING_STAMP := $(PLANNING_VENV)/.snakemake-$(SNAKEMAKE_VERSION)
PLANNING_PYTHON ?= $(PLANNING_VENV)/bin/python
SNAKEMAKE ?= $(PLANNING_VENV)/bin/snakemake
# the Snakemake-only venv, built only where a target uses it (tests and CI may give their own)
SNAKEMAKE_DEPS = $(if $(findstring $(PLANNING_VENV)/,$(SNAKEMAKE)),$(PLANNING_STAMP))
PLANNING_PYTHON_DEPS = $(if $(findstring $(PLANNING_VENV)/,$(PLANNING_PYTHON)),$(PLANNING_STAMP))
SNAKEFMT ?= $(VENV)/bin/snakefmt
# every shipped config; CI dry-runs one per job (`make dryrun CONFIGS=configs/paper.yaml`)
CONFIGS ?= config.yaml $(sort $(wildcard configs/*.yaml))
LINT_CONFIGS ?= config.yaml configs/paper.yaml
RULE_FILES := Snakefile $(sort $(wildcard workflow/rules/*.smk))

.PHONY: demo test bench dryrun placeholders lint format-check containerize clean

$(STAMP): requirements.lock pyproject.toml
	test -x $(VENV)/bin/python || $(PYTHON) -m venv $(VENV)
	$(VENV)/bin/python -m pip install --quiet --upgrade pip
	$(VENV)/bin/python -m pip install --quiet --no-compile -r requirements.lock
	$(VENV)/bin/python -m pip install --quiet --no-deps -e .
	# byte-compile on every core at once (pip compiles one file at a time: 83 s against 57 s in all
	# on 2 cores); as under pip, a file written for a later Python (one in torch's tests) is skipped
	$(VENV)/bin/python -m compileall -q -j 0 $(VENV)/lib > /dev/null 2>&1 || true
	touch $(STAMP)

$(PLANNING_STAMP):
	$(PYTHON) -m venv --clear $(PLANNING_VENV)
	$(PLANNING_VENV)/bin/python -m pip install --quiet snakemake==$(SNAKEMAKE_VERSION)
	touch $@

demo: $(STAMP)
	$(VENV)/bin/snakemake --cores $(CORES) --configfile config.yaml
	@echo "Metrics: results/*/metrics.csv  Figures: results/*/figures/"

# one pytest worker per core; a file's tests stay on one worker, so its module fixtures are built once;
# files go out in collection order, the slowest first (tests/conftest.py), so neither worker idles at the end
test: $(STAMP)
	$(VENV)/bin/python -m pytest -q -n $(CORES) --dist loadfile --no-loadscope-reorder --durations=15 tests

bench: $(STAMP)
	$(VENV)/bin/python benchmarks/run_all.py $(BENCH_ARGS)

# each config must build its DAG (up to the checkpoint prepare_data); a dry run takes
# no lock (--nolock), so it neither blocks nor is blocked by a running workflow
dryrun: $(SNAKEMAKE_DEPS)
	@for c in $(CONFIGS); do \
		echo "snakemake -n --configfile $$c"; \
		$(SNAKEMAKE) -n --nolock --configfile $$c || exit 1; \
	done

# empty stand-ins for the local data files that CONFIGS name but this checkout lacks (CI has
# no ../shared): a dry run needs each input to exist, not its content; never overwrites a file
placeholders: $(PLANNING_PYTHON_DEPS)
	$(PLANNING_PYTHON) .ci/placeholder_data.py $(CONFIGS)

lint: $(SNAKEMAKE_DEPS)
	@for c in $(LINT_CONFIGS); do \
		echo "snakemake --lint --configfile $$c"; \
		$(SNAKEMAKE) --lint --configfile $$c || exit 1; \
	done

# line length from pyproject.toml ([tool.snakefmt]); `snakefmt Snakefile workflow/rules/` fixes
format-check: $(STAMP)
	$(SNAKEFMT) --check $(RULE_FILES)

# The Dockerfile of the Snakefile's containerized: image: `snakemake --containerize` (every env
# of envs/; it needs conda on PATH, for conda's platform), plus one line: the image's solver
# takes the CUDA build of pytorch, as on a machine with a GPU driver (it runs on CPUs too).
# tests/test_ci.py checks that the committed Dockerfile is what this writes.
DOCKERFILE ?= Dockerfile
containerize: $(SNAKEMAKE_DEPS)
	$(SNAKEMAKE) --containerize --nolock --configfile config.yaml > $(DOCKERFILE).tmp || { rm -f $(DOCKERFILE).tmp; exit 1; }
	awk '{ print } /^LABEL io.github.snakemake.conda_env_hash=/ { print "ENV CONDA_OVERRIDE_CUDA=12" }' \
		$(DOCKERFILE).tmp > $(DOCKERFILE)
	rm $(DOCKERFILE).tmp

# removes every result, and .snakemake/ with it: Snakemake's records and every conda env built under .snakemake/conda
clean:
	rm -rf results/* results/.checkpoints .snakemake

# the README's figure, docs/demo.png, drawn from the results of `make demo` (docs/readme_figure.py)
.PHONY: readme-figure
readme-figure: $(STAMP)
	$(VENV)/bin/python docs/readme_figure.py
