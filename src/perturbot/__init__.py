"""perturbot: predict single-cell perturbation responses with neural optimal transport."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("perturbot")
except PackageNotFoundError:  # running from a source tree without installation
    __version__ = "0.0.0+unknown"

__all__ = ["__version__"]
