"""Rule download_w1bench_pair: download one published benchmark pair (once) and check it; record its path and sha256."""

from perturbot.atomic import remove_stale_outputs, write_json
from perturbot.data.download import fetch_archive
from perturbot.logs import log_to_file

log_to_file(snakemake.log[0])
remove_stale_outputs(*snakemake.output)
path, sha256 = fetch_archive(snakemake.params.source, name=snakemake.params.name)
write_json(snakemake.output[0], {"archive": str(path), "sha256": sha256}, indent=1)
