"""Rule download_dataset: take a dataset's files out of its verified archive; prepare_data then reads them."""

from perturbot.jobenv import own_packages_only

own_packages_only()  # first: under --use-conda, every other package comes from this job's env

from perturbot.atomic import remove_stale_outputs, write_json
from perturbot.data.download import fetch_dataset
from perturbot.logs import log_job

log_job(snakemake)  # a DownloadError or DataError is shown, in the log and on stderr, as its message
remove_stale_outputs(*snakemake.output)
files = fetch_dataset(snakemake.params.dataset, name=snakemake.wildcards.dataset, member_hint=snakemake.params.member_hint)
write_json(snakemake.output[0], {"dataset": snakemake.wildcards.dataset, **files}, indent=1)
