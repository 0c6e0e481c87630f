"""Input functions and names of the data rules (data.smk): which archive each downloaded dataset comes from."""

from perturbot.data.catalog import archive_path


def downloaded_datasets():
    """Config datasets fetched from an address (not synthetic, not a local file)."""
    return {n: d for n, d in config["datasets"].items() if isinstance(d.get("source"), dict)}


def archive_file(dataset):
    """The file a dataset is taken from, under resources/downloads/ (several datasets may share one)."""
    return archive_path(config["datasets"][dataset]["source"], dataset, "resources/downloads").name


# archive file -> the first dataset that names it (its source gives the addresses and sha256)
ARCHIVES = {}
for _name in downloaded_datasets():
    ARCHIVES.setdefault(archive_file(_name), _name)


def member_hint(dataset):
    """Where a dataset's member is written, for the error that lists the archive's files."""
    entry = config["datasets"][dataset]
    if "catalog" in entry:
        return f"the member line of datasets.{entry['catalog']} in resources/datasets.yaml"
    return f"datasets.{dataset}.source.member in your config"
