"""W1-OT paper, Supplementary Fig. S1: the GroupSort group count on the Wasserstein-1 benchmark (config w1ot_group_size)."""


include: "common_w1bench.smk"


rule download_w1bench_pair:
    """Download one published benchmark pair (a few kB) and check its sha256 against the catalogue."""
    output:
        "resources/downloads/{pairs}_dim_{dim}_width_{width}.fetched.json",
    log:
        "resources/downloads/logs/{pairs}_dim_{dim}_width_{width}.log",
    wildcard_constraints:
        pairs="|".join(map(re.escape, W1BENCH_PAIRS)) or "^$",
        dim=r"\d+",
        width=r"\d+",
    localrule: True
    conda:
        "../../envs/data.yaml"
    params:
        source=lambda wc: pair_source(W1BENCH_CATALOG, wc.pairs, int(wc.dim), int(wc.width)),
        dataset=lambda wc: f"{wc.pairs} dim_{wc.dim}/width_{wc.width}",
    script:
        "../scripts/download_archive.py"


rule w1bench_fit:
    """Train W1-OT's potential with one GroupSort group count on one pair and score it by the benchmark's metrics."""
    input:
        w1bench_pair_file,
    output:
        "results/w1ot_group_size/dim_{dim}/width_{width}/groups_{groups}.json",
    log:
        "results/w1ot_group_size/logs/dim_{dim}_width_{width}_groups_{groups}.log",
    benchmark:
        "results/w1ot_group_size/benchmarks/dim_{dim}_width_{width}_groups_{groups}.tsv"
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
        "results/w1ot_group_size/metrics.csv",
    log:
        "results/w1ot_group_size/logs/table.log",
    localrule: True
    conda:
        "../../envs/analysis.yaml"
    script:
        "../scripts/w1bench_table.py"


rule figure_w1ot_group_size:
    """Cosine, L2 and W1 error of W1-OT's potential against its GroupSort group count."""
    input:
        "results/w1ot_group_size/metrics.csv",
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
