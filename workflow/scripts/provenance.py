"""Rule provenance: what produced these results."""

from perturbot.atomic import remove_stale_outputs, write_json
from perturbot.logs import log_to_file
from perturbot.provenance import provenance

log_to_file(snakemake.log[0])
remove_stale_outputs(*snakemake.output)
write_json(snakemake.output[0], provenance(snakemake.params.config, snakemake.params.code_by_rule), indent=2)
