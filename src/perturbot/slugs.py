"""Safe file-name slugs for perturbation and holdout names (tables keep the real names)."""

from __future__ import annotations

import re

_UNSAFE = re.compile(r"[^A-Za-z0-9.\-]+")


def slugify(name: str) -> str:
    """Replace runs of characters that are unsafe in paths (spaces, ``+``, ``/``, ...) by ``_``.

    >>> slugify("Dasatinib + Trametinib")
    'Dasatinib_Trametinib'
    """
    slug = _UNSAFE.sub("_", str(name)).strip("_")
    if not slug:
        raise ValueError(f"name {name!r} has no characters usable in a file name")
    return slug


def slug_map(names: list[str]) -> dict[str, str]:
    """Map slug -> real name, refusing two names that collapse to the same slug."""
    out: dict[str, str] = {}
    for name in names:
        slug = slugify(name)
        if slug in out and out[slug] != name:
            raise ValueError(f"names {out[slug]!r} and {name!r} map to the same file name {slug!r}")
        out[slug] = name
    return out
