"""Rule provenance: what produced these results."""

import json

from perturbot.logs import log_to_file
from perturbot.provenance import provenance

log_to_file(snakemake.log[0])
with open(snakemake.output[0], "w") as fh:
    json.dump(provenance(snakemake.params.config), fh, indent=2)
