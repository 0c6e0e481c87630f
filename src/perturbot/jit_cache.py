"""Numba's on-disk cache for umap-learn, whose JIT functions scanpy's neighbours and UMAP call.

umap-learn compiles its numba functions without ``cache=True``, so every job that builds a
neighbour graph (``cell_states``, ``umap_embeddings``) spends about 9 s of CPU compiling the
same code again, more than the embedding of a few thousand cells itself. Turning numba's cache
on for them makes the compiled code a file that later jobs load in a fraction of a second. The
machine code is the same, so the graph, the Leiden states and the UMAP are too.

Numba keeps the cache beside umap's sources (``__pycache__``) or, where that folder is read-only,
in the user's cache folder; ``NUMBA_CACHE_DIR`` sets it elsewhere.
"""

from __future__ import annotations

import functools
import logging

log = logging.getLogger(__name__)

#: umap-learn's modules whose numba functions scanpy's ``pp.neighbors`` and ``tl.umap`` reach
UMAP_MODULES = ("umap.umap_", "umap.layouts", "umap.utils", "umap.distances", "umap.sparse")


@functools.cache
def cache_umap_compilation() -> int:
    """Turn numba's on-disk cache on for umap-learn's JIT functions; the number of functions.

    Once per process. If umap-learn or numba changes in a way this does not know, nothing is
    changed and the jobs compile as before (slower, same results).
    """
    import importlib

    try:
        from numba.core.registry import CPUDispatcher

        count = 0
        for name in UMAP_MODULES:
            module = importlib.import_module(name)
            for value in vars(module).values():
                if isinstance(value, CPUDispatcher) and value.__module__ == name:
                    value.enable_caching()
                    count += 1
    except Exception as err:  # an optimisation only: never stop a job for it
        log.debug("numba's cache not enabled for umap-learn: %s", err)
        return 0
    return count
