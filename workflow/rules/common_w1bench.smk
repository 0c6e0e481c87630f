"""Settings check and input functions of the group-size test's rules (w1bench.smk)."""

from perturbot.config import ConfigError, check_w1ot_group_size
from perturbot.data.catalog import load_catalog, pair_source

W1BENCH_DIR = "results/w1ot_group_size"
#: The dataset catalogue, read once: its benchmark_pairs section names the published pairs.
W1BENCH_CATALOG = load_catalog(os.path.join(workflow.basedir, "resources", "datasets.yaml"))
W1BENCH_PAIRS = W1BENCH_CATALOG.get("benchmark_pairs") or {}

if "w1ot_group_size" in config:
    try:
        check_w1ot_group_size(config["w1ot_group_size"], W1BENCH_CATALOG)
    except ConfigError as err:
        raise WorkflowError(f"Invalid configuration: {err}") from None


def w1bench_settings():
    return config["w1ot_group_size"]


def w1bench_catalog_pairs():
    """The catalogue's name of the published pairs, or None when the settings name a local folder."""
    pairs = w1bench_settings()["pairs"]
    return pairs if pairs in W1BENCH_PAIRS else None  # as check_w1ot_group_size decides


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
