"""Rule download_dataset: take a dataset's files out of its verified archive; prepare_data then reads them."""

import json
import sys

from perturbot.data.download import fetch_dataset
from perturbot.data.io import DataError
from perturbot.logs import log_to_file

log_to_file(snakemake.log[0])
try:
    files = fetch_dataset(snakemake.params.dataset, name=snakemake.wildcards.dataset, member_hint=snakemake.params.member_hint)
except DataError as err:
    print(f"\nDownload error: {err}\n", file=sys.stderr)
    sys.exit(1)
with open(snakemake.output[0], "w") as fh:
    json.dump({"dataset": snakemake.wildcards.dataset, **files}, fh, indent=1)
