"""Empty stand-ins for the local data files that configs name but this checkout lacks.

Run from the repository root before `make dryrun` where `../shared/data` is absent (CI):
a dry run needs each input file to exist, not its content (prepare_data, the only rule
that reads a dataset, is a checkpoint). Prints every file it creates; never overwrites one.

    python .ci/placeholder_data.py config.yaml configs/*.yaml
"""

import sys
from pathlib import Path

import yaml


def local_sources(config_path: Path) -> list[Path]:
    """The local files a config's datasets are read from (not 'synthetic', not downloads)."""
    datasets = (yaml.safe_load(config_path.read_text()) or {}).get("datasets") or {}
    sources = (d.get("source") for d in datasets.values() if isinstance(d, dict))
    return [Path(s) for s in sources if isinstance(s, str) and s != "synthetic"]


def main(configs: list[str]) -> None:
    for config in configs:
        for path in local_sources(Path(config)):
            if not path.exists():
                path.parent.mkdir(parents=True, exist_ok=True)
                path.touch()
                print(f"{config}: empty placeholder for {path} (absent; a dry run reads no data)")


if __name__ == "__main__":
    main(sys.argv[1:])
