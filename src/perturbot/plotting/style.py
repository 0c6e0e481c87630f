"""The one palette, the papers' model names, and how every figure is saved.

Every figure module takes its colours and names from here, so a model keeps
its colour in every figure of every experiment.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import seaborn as sns  # noqa: E402

# TrueType fonts (type 42) embed the glyphs in the PDF
matplotlib.rcParams.update(
    {
        "pdf.fonttype": 42,
        "ps.fonttype": 42,
        "savefig.bbox": "tight",
        "figure.dpi": 110,
        "axes.titlesize": 10,
        "axes.labelsize": 9,
        "xtick.labelsize": 8,
        "ytick.labelsize": 8,
        "legend.fontsize": 8,
    }
)

#: Display names as in the papers.
DISPLAY_NAMES = {
    "identity": "Identity",
    "observed": "Observed",
    "scgen": "scGen",
    "cae": "cAE",
    "gaussian_ot": "Gaussian OT",
    "popalign": "PopAlign",
    "cellot": "CellOT",
    "w1ot": "W1-OT",
    "otfm": "OT-FM",
}
MODEL_COLORS = {
    "identity": "#9e9e9e",
    "observed": "#4d4d4d",
    "scgen": "#e69f00",
    "cae": "#cc79a7",
    "gaussian_ot": "#6a3d9a",
    "popalign": "#b8a000",
    "cellot": "#0072b2",
    "w1ot": "#d55e00",
    "otfm": "#56b4e9",
    "control": "#bdbdbd",
    "perturbed": "#000000",
    "truth": "#009e73",
}
#: Model label (or run) -> its registry name (``model``) and capability tags, as
#: ``perturbot.models.tags`` gives them; the workflow passes it to every figure.
Kinds = dict[str, dict[str, Any]]
_EXTRA = sns.color_palette("tab10").as_hex()


def base_model(label: str, kinds: Kinds | None = None) -> str:
    """Registry name of a label: from ``kinds`` when given, else the longest known name it starts with."""
    if kinds and label in kinds:
        return kinds[label]["model"]
    return label if label in MODEL_COLORS else _known_prefix(label)[0]


def _known_prefix(label: str) -> tuple[str, str]:
    """(model, rest) for labels like ``gaussian_ot_genes``; else (first ``_`` part, rest)."""
    for name in sorted(DISPLAY_NAMES, key=len, reverse=True):
        if label.startswith(name + "_"):
            return name, label[len(name) + 1 :]
    base, _, rest = label.partition("_")
    return base, rest


def display_name(label: str) -> str:
    """The papers' name of a model; ``w1ot_genes`` becomes ``W1-OT (genes)``."""
    if label in DISPLAY_NAMES:
        return DISPLAY_NAMES[label]
    base, rest = _known_prefix(label)
    if base in DISPLAY_NAMES and rest:
        return f"{DISPLAY_NAMES[base]} ({rest.replace('_', ' ')})"
    return label


def model_color(label: str, kinds: Kinds | None = None) -> str:
    """Colour of a model label; unknown labels get a stable colour from their name."""
    if label in MODEL_COLORS:
        return MODEL_COLORS[label]
    base = base_model(label, kinds)
    if base in MODEL_COLORS:
        return MODEL_COLORS[base]
    return _EXTRA[sum(map(ord, label)) % len(_EXTRA)]


ROLES = ("bound", "baseline", "method")


def model_order(labels, kinds: Kinds | None = None) -> list[str]:
    """Bounds first (identity, observed), then baselines, then methods; the papers' order within each."""
    rank = {name: i for i, name in enumerate(DISPLAY_NAMES)}

    def key(label: str) -> tuple:
        role = tag(label, kinds, "role", "method")
        return ROLES.index(role) if role in ROLES else len(ROLES), rank.get(base_model(label, kinds), len(rank)), label

    return sorted(set(labels), key=key)


def tag(label: str, kinds: Kinds | None, name: str, default: Any = False) -> Any:
    """A capability tag of a label's model; ``default`` for labels ``kinds`` does not know."""
    return (kinds or {}).get(label, {}).get(name, default)


def is_ot(label: str, kinds: Kinds | None = None) -> bool:
    return bool(tag(label, kinds, "is_ot"))


def is_bound(label: str, kinds: Kinds | None = None) -> bool:
    return tag(label, kinds, "role", "method") == "bound"


def save_figure(fig: plt.Figure, pdf_path: str | Path) -> None:
    """Write the PDF (fonts embedded) and a PNG preview beside it."""
    from perturbot.atomic import atomic_path, remove_stale_outputs

    pdf_path = Path(pdf_path)
    png_path = pdf_path.with_suffix(".png")
    remove_stale_outputs(pdf_path, png_path)  # a killed figure job's half-written files
    for path, options in ((pdf_path, {}), (png_path, {"dpi": 150})):
        with atomic_path(path) as tmp:  # the temporary keeps the suffix that names the format
            fig.savefig(tmp, **options)
    plt.close(fig)
