"""Rule w1bench_fit: W1-OT's potential with one group count on one benchmark pair, scored (one JSON row)."""

from perturbot.jobenv import own_packages_only

own_packages_only()  # first: under --use-conda, every other package comes from this job's env

import json

from perturbot.atomic import remove_stale_outputs, write_json
from perturbot.logs import log_job
from perturbot.training import set_threads
from perturbot.w1bench import group_size_run, load_pair

log_job(snakemake)
remove_stale_outputs(*snakemake.output)
set_threads(snakemake.threads)
given = snakemake.input[0]
if given.endswith(".fetched.json"):  # a verified download: read it at the recorded sha256
    record = json.loads(open(given).read())
    pair = load_pair(record["archive"], sha256=record["sha256"])
else:
    pair = load_pair(given)
wc = snakemake.wildcards
if (pair.dim, pair.width) != (int(wc.dim), int(wc.width)):
    raise ValueError(f"{given} holds a pair of dimension {pair.dim} with {pair.width} funnels, not dim_{wc.dim}/width_{wc.width}")
row = group_size_run(pair, int(wc.groups), snakemake.params.settings, snakemake.params.seed, snakemake.params.device)
write_json(snakemake.output[0], row, indent=1)
