"""Safe file-name slugs for perturbation and holdout names (tables keep the real names).

A slug names a file or a directory, so two names must never share one: the second
would overwrite the first, which would never be scored. :func:`slug_map` and
:func:`check_distinct` refuse that, also for slugs that differ only in case
(one file on macOS' and Windows' default file systems).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence

from perturbot.errors import ClearError

_UNSAFE = re.compile(r"[^A-Za-z0-9.\-]+")


class SlugError(ClearError, ValueError):
    """A name that gives no usable file name, or two names that give the same one."""

    kind = "Name error"


def slugify(name: str) -> str:
    """Replace runs of characters that are unsafe in paths (spaces, ``+``, ``/``, ...) by ``_``.

    >>> slugify("Dasatinib + Trametinib")
    'Dasatinib_Trametinib'
    """
    slug = _UNSAFE.sub("_", str(name)).strip("_")
    if not slug.strip("."):  # '' is no name; '.' and '..' are the directory and its parent
        raise SlugError(
            f"name {name!r} has no letter, digit or '-' usable in a file name"
            + (f" (it would become {slug!r})" if slug else "")
            + ": rename it"
        )
    return slug


def check_distinct(files: Iterable[tuple[str, str]]) -> None:
    """Refuse two ``(slug, what it stands for)`` pairs that name one file, case ignored."""
    seen: dict[str, tuple[str, str]] = {}
    for slug, label in files:
        key = slug.casefold()
        if key in seen:
            other, other_label = seen[key]
            if other == slug:
                raise SlugError(
                    f"{other_label} and {label} both become the file name {slug!r}, so one would overwrite "
                    f"the other's results: rename one of them"
                )
            raise SlugError(
                f"{other_label} and {label} become the file names {other!r} and {slug!r}, one file on "
                f"case-insensitive file systems (macOS, Windows), so one would overwrite the other's results: "
                f"rename one of them"
            )
        seen[key] = (slug, label)


def slug_map(names: Sequence[str], what: str = "name") -> dict[str, str]:
    """Map slug -> real name (in the order given), refusing a name listed twice or two names that share a slug.

    ``what`` says what the names are ("holdout", "perturbation") in the message.
    """
    names = [str(n) for n in names]
    seen: set[str] = set()
    for name in names:
        if name in seen:
            raise SlugError(f"{what} {name!r} is listed twice: list it once")
        seen.add(name)
    slugs = [slugify(n) for n in names]
    check_distinct((slug, f"{what} {name!r}") for slug, name in zip(slugs, names))
    return dict(zip(slugs, names))
