"""Rule download_dataset: fetch and verify once; prepare_data then reads the verified local file."""

import json
import sys

from perturbot.data.download import DownloadError, fetch
from perturbot.logs import log_to_file

log_to_file(snakemake.log[0])
try:
    path = fetch(snakemake.params.source, name=snakemake.wildcards.dataset)
except DownloadError as err:
    print(f"\nDownload error: {err}\n", file=sys.stderr)
    sys.exit(1)
with open(snakemake.output[0], "w") as fh:
    json.dump({"dataset": snakemake.wildcards.dataset, "path": str(path)}, fh, indent=1)
