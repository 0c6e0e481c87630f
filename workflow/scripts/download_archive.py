"""Rule download_archive: download one archive (once) and verify it; record where it is and its sha256."""

from perturbot.jobenv import own_packages_only

own_packages_only()  # first: under --use-conda, every other package comes from this job's env

from perturbot.atomic import remove_stale_outputs, write_json
from perturbot.data.download import fetch_archive
from perturbot.logs import log_job

log_job(snakemake)  # a DownloadError is shown, in the log and on stderr, as 'Download error: <message>'
remove_stale_outputs(*snakemake.output)
path, sha256 = fetch_archive(snakemake.params.source, name=snakemake.params.dataset)
write_json(snakemake.output[0], {"archive": str(path), "sha256": sha256}, indent=1)
