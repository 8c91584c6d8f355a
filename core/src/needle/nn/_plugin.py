"""Core's own nn modules, registered through the same hook as a third-party plugin's."""

from __future__ import annotations

from typing import Any

from ..plugins import hookimpl

__all__ = ["needle_nn_modules"]


@hookimpl
def needle_nn_modules() -> dict[str, Any]:
    """Every built-in module class of :mod:`needle.nn`, by name."""
    from .. import nn

    return {name: getattr(nn, name) for name in nn.__all__}
