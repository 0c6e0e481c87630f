# Two entry points: `make demo` (the default config, end to end) and `make test`.
# Both create .venv from the pinned requirements.lock and rebuild it when the lock changes.
# The checks CI runs (.github/workflows/ci.yml) are targets too: dryrun (after placeholders where
# ../shared is absent), lint, format-check; containerize rewrites the Dockerfile.
PYTHON ?= python3
VENV := .venv
STAMP := $(VENV)/.installed
CORES ?= 2
VENV_PYTHON ?= $(VENV)/bin/python
SNAKEMAKE ?= $(VENV)/bin/snakemake
SNAKEFMT ?= $(VENV)/bin/snakefmt
# every shipped config; CI dry-runs one per job (`make dryrun CONFIGS=configs/paper.yaml`)
CONFIGS ?= config.yaml $(sort $(wildcard configs/*.yaml))
LINT_CONFIGS ?= config.yaml configs/paper.yaml
RULE_FILES := Snakefile $(sort $(wildcard workflow/rules/*.smk))

.PHONY: demo test bench dryrun placeholders lint format-check containerize clean

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

# each config must build its DAG (up to the checkpoint prepare_data); a dry run takes
# no lock (--nolock), so it neither blocks nor is blocked by a running workflow
dryrun: $(STAMP)
	@for c in $(CONFIGS); do \
		echo "snakemake -n --configfile $$c"; \
		$(SNAKEMAKE) -n --nolock --configfile $$c || exit 1; \
	done

# empty stand-ins for the local data files that CONFIGS name but this checkout lacks (CI has
# no ../shared): a dry run needs each input to exist, not its content; never overwrites a file
placeholders: $(STAMP)
	$(VENV_PYTHON) .ci/placeholder_data.py $(CONFIGS)

lint: $(STAMP)
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
containerize: $(STAMP)
	$(SNAKEMAKE) --containerize --nolock --configfile config.yaml > $(DOCKERFILE).tmp || { rm -f $(DOCKERFILE).tmp; exit 1; }
	awk '{ print } /^LABEL io.github.snakemake.conda_env_hash=/ { print "ENV CONDA_OVERRIDE_CUDA=12" }' \
		$(DOCKERFILE).tmp > $(DOCKERFILE)
	rm $(DOCKERFILE).tmp

clean:
	rm -rf results/* results/.checkpoints .snakemake

# the README's figure, docs/demo.png, drawn from the results of `make demo` (docs/readme_figure.py)
.PHONY: readme-figure
readme-figure: $(STAMP)
	$(VENV)/bin/python docs/readme_figure.py
