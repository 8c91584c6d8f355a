"""Optimizers: the course's ``needle.optim``.

Built-in optimizers import directly from here. Optimizers that plugins provide
(hook ``needle_optimizers``) appear as attributes too, looked up on first
access; built-ins arrive through the same hook (:mod:`needle.optim._plugin`).
"""

from __future__ import annotations

from typing import Any

from .optimizers import SGD, Adam, Optimizer, clip_grad_norm

__all__ = ["Optimizer", "SGD", "Adam", "clip_grad_norm"]


def __getattr__(name: str) -> Any:
    """An optimizer provided by a plugin (hook ``needle_optimizers``)."""
    if name.startswith("__"):
        raise AttributeError(f"module 'needle.optim' has no attribute {name!r}")
    from ..plugins.manager import extensions

    found = extensions("optimizers")
    if name in found:
        return found[name]
    raise AttributeError(
        f"module 'needle.optim' has no attribute {name!r} (not built in, and no installed "
        f"plugin provides an optimizer of that name; `needle info` lists plugins)"
    )


def __dir__() -> list[str]:
    from ..plugins.manager import PluginError, extensions

    try:
        extra = set(extensions("optimizers"))
    except PluginError:  # dir() must work even when two plugins clash
        extra = set()
    return sorted(set(globals()) | extra)
