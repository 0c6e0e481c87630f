"""W1-OT paper, Supplementary Fig. S1: the GroupSort group count on the Wasserstein-1 benchmark (config w1ot_group_size)."""

from perturbot.data.catalog import load_catalog
from perturbot.w1bench import check_settings, pair_source

W1BENCH_DIR = "results/w1ot_group_size"

if "w1ot_group_size" in config:
    try:
        check_settings(
            config["w1ot_group_size"], load_catalog(os.path.join(workflow.basedir, "resources", "datasets.yaml"))
        )
    except ValueError as err:
        raise WorkflowError(f"Invalid configuration: {err}") from None


def w1bench_settings():
    return config["w1ot_group_size"]


def w1bench_catalog_pairs():
    """The catalogue's name of the published pairs, or None when the settings name a local folder."""
    pairs = w1bench_settings()["pairs"]
    return None if ("/" in pairs or os.path.isdir(pairs)) else pairs


def w1bench_pair_file(wc):
    """A pair's file: the download record of a catalogued pair, or the file in the local folder."""
    name = w1bench_catalog_pairs()
    if name is None:
        return os.path.join(w1bench_settings()["pairs"], f"dim_{wc.dim}", f"width_{wc.width}", "deg_8_seed_987.pt")
    return f"resources/downloads/{name}_dim_{wc.dim}_width_{wc.width}.fetched.json"


def w1bench_runs():
    s = w1bench_settings()
    return [
        f"{W1BENCH_DIR}/dim_{d}/width_{w}/groups_{g}.json"
        for d in s["dims"]
        for w in s["widths"]
        for g in s["n_groups"]
    ]


rule download_w1bench_pair:
    """Download one published benchmark pair (a few kB) and check its sha256 against the catalogue."""
    output:
        "resources/downloads/{pairs}_dim_{dim}_width_{width}.fetched.json",
    log:
        "resources/downloads/logs/{pairs}_dim_{dim}_width_{width}.log",
    wildcard_constraints:
        pairs="|".join(
            map(
                re.escape,
                load_catalog(os.path.join(workflow.basedir, "resources", "datasets.yaml")).get("benchmark_pairs")
                or {},
            )
        )
        or "^$",
        dim=r"\d+",
        width=r"\d+",
    localrule: True
    conda:
        "../../envs/data.yaml"
    params:
        source=lambda wc: pair_source(
            load_catalog(os.path.join(workflow.basedir, "resources", "datasets.yaml")),
            wc.pairs,
            int(wc.dim),
            int(wc.width),
        ),
        name=lambda wc: f"{wc.pairs} dim_{wc.dim}/width_{wc.width}",
    script:
        "../scripts/download_w1bench_pair.py"


rule w1bench_fit:
    """Train W1-OT's potential with one GroupSort group count on one pair and score it by the benchmark's metrics."""
    input:
        w1bench_pair_file,
    output:
        W1BENCH_DIR + "/dim_{dim}/width_{width}/groups_{groups}.json",
    log:
        W1BENCH_DIR + "/logs/dim_{dim}_width_{width}_groups_{groups}.log",
    benchmark:
        W1BENCH_DIR + "/benchmarks/dim_{dim}_width_{width}_groups_{groups}.tsv"
    wildcard_constraints:
        dim=r"\d+",
        width=r"\d+",
        groups=r"\d+",
    conda:
        "../../envs/training.yaml"
    threads: 1
    resources:
        gpu=GPU_REQUEST,
        mem_mb=lambda wc, attempt: 4000 * attempt,
        runtime=120,
    params:
        settings=lambda wc: w1bench_settings(),
        seed=config["seed"],
        device=config["device"],
    script:
        "../scripts/w1bench_fit.py"


rule w1bench_table:
    """One table of every pair and group count (results/w1ot_group_size/metrics.csv)."""
    input:
        lambda wc: w1bench_runs(),
    output:
        W1BENCH_DIR + "/metrics.csv",
    log:
        W1BENCH_DIR + "/logs/table.log",
    localrule: True
    conda:
        "../../envs/analysis.yaml"
    script:
        "../scripts/w1bench_table.py"


rule figure_w1ot_group_size:
    """Cosine, L2 and W1 error of W1-OT's potential against its GroupSort group count."""
    input:
        W1BENCH_DIR + "/metrics.csv",
    output:
        pdf=figure_report(
            "results/figures/w1ot_group_size.pdf",
            "w1ot_group_size",
            experiment="Across experiments",
            figure="w1ot_group_size",
        ),
        png="results/figures/w1ot_group_size.png",
    log:
        "results/figures/logs/w1ot_group_size.log",
    localrule: True
    conda:
        "../../envs/analysis.yaml"
    script:
        "../scripts/figure_w1ot_group_size.py"
