"""Rule download_archive: download one archive (once) and verify it; record where it is and its sha256."""

import json

from perturbot.data.download import fetch_archive
from perturbot.logs import log_to_file

log_to_file(snakemake.log[0])  # a DownloadError is shown, in the log and on stderr, as 'Download error: <message>'
path, sha256 = fetch_archive(snakemake.params.source, name=snakemake.params.dataset)
with open(snakemake.output[0], "w") as fh:
    json.dump({"archive": str(path), "sha256": sha256}, fh, indent=1)
