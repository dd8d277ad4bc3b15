"""papermill's plugins found with one read of the installed packages instead of two.

When it is imported, papermill registers the engines and the notebook I/O handlers that other
packages declare (the entry point groups ``papermill.engine`` and ``papermill.io``), each
through ``entrypoints.get_group_all``, which reads every installed distribution's metadata
again: 22 to 26 ms a group here, twice, in every process that runs a notebook (papermill PR
#260 added the second group). Within :func:`plugins_read_once` both groups come from one
``importlib.metadata.entry_points()`` (15 ms; jupyter_client has loaded importlib.metadata
already): the same plugins, which papermill registers as before (it asks each for ``name`` and
``load()``).
"""

from __future__ import annotations

import contextlib
import importlib.metadata
from collections.abc import Iterator
from typing import Any


@contextlib.contextmanager
def plugins_read_once() -> Iterator[None]:
    """While papermill is imported in it, its entry points are read once for both groups."""
    import entrypoints

    original = entrypoints.get_group_all
    read: list[importlib.metadata.EntryPoints] = []

    def get_group_all(group: str, path: Any = None) -> list[Any]:
        if path is not None:  # a search path of the caller's own: entrypoints' way
            return original(group, path)
        if not read:
            read.append(importlib.metadata.entry_points())
        return list(read[0].select(group=group))

    entrypoints.get_group_all = get_group_all
    try:
        yield
    finally:
        entrypoints.get_group_all = original
