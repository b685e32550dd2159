"""Provides :func:`lazy_module`: a module whose code runs on its first attribute access, the
recipe of the standard library's :class:`importlib.util.LazyLoader`.

The TUI's first frame must not pay for what only later frames use: reading codex's events
builds some 15 ms of pydantic models (:mod:`server_client.codex`), which the empty dashboard
needs none of.
"""

from __future__ import annotations

import importlib.util
import sys
from types import ModuleType

__all__ = ["lazy_module"]


def lazy_module(name: str) -> ModuleType:
    """The module ``name``; when it is not imported yet, a stand-in that imports it on its
    first attribute access (module-level ``from name import x`` would import it at once).

    Raises:
        ModuleNotFoundError: there is no module ``name``.
    """
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.find_spec(name)
    if spec is None or spec.loader is None:
        raise ModuleNotFoundError(f"no module named {name!r}", name=name)
    spec.loader = importlib.util.LazyLoader(spec.loader)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module
