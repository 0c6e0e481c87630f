def figure_targets(experiment):
    """Figures of one experiment built by default."""
    return [f"results/{experiment}/figures/{name}.pdf" for name in ("mmd_boxplot", "marginals")]


def global_figure_targets():
    """Figures that span experiments (results/figures/), built by default."""
    return []


rule figure_mmd_boxplot:
    """MMD per model across perturbations or holdouts."""
    input:
        "results/{experiment}/metrics.csv",
    output:
        pdf=report(
            "results/{experiment}/figures/mmd_boxplot.pdf",
            caption="../report/mmd_boxplot.rst",
            category="{experiment}",
            subcategory="Figures",
        ),
        png="results/{experiment}/figures/mmd_boxplot.png",
    log:
        "results/{experiment}/logs/figures/mmd_boxplot.log",
    localrule: True
    conda:
        "../../envs/analysis.yaml"
    script:
        "../scripts/figure_mmd_boxplot.py"


rule figure_marginals:
    """Marginal densities of the most changed features for control, observed and predicted cells."""
    input:
        data="results/{experiment}/data",
        predictions=prediction_files,
    output:
        pdf=report(
            "results/{experiment}/figures/marginals.pdf",
            caption="../report/marginals.rst",
            category="{experiment}",
            subcategory="Figures",
        ),
        png="results/{experiment}/figures/marginals.png",
    log:
        "results/{experiment}/logs/figures/marginals.log",
    params:
        figures=lambda wc: config["experiments"][wc.experiment]["figures"],
    localrule: True
    conda:
        "../../envs/analysis.yaml"
    script:
        "../scripts/figure_marginals.py"
