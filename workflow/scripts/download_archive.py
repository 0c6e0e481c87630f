"""Rule download_archive: download one archive (once) and verify it; record where it is and its sha256."""

import json
import sys

from perturbot.data.download import DownloadError, fetch_archive
from perturbot.logs import log_to_file

log_to_file(snakemake.log[0])
try:
    path, sha256 = fetch_archive(snakemake.params.source, name=snakemake.params.dataset)
except DownloadError as err:
    print(f"\nDownload error: {err}\n", file=sys.stderr)
    sys.exit(1)
with open(snakemake.output[0], "w") as fh:
    json.dump({"archive": str(path), "sha256": sha256}, fh, indent=1)
