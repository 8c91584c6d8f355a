"""Optimizers: the course's ``needle.optim``.

Built-in optimizers are imported here directly, and registered through the same
hook as a plugin's (:mod:`needle.optim._plugin`), so a plugin that provides one of
their names is reported when it registers. Optimizers that plugins provide (hook
``needle_optimizers``) appear as attributes too.
"""

from __future__ import annotations

from ..plugins.manager import extension_namespace
from .optimizers import SGD, Adam, Optimizer, clip_grad_norm

__all__ = ["Optimizer", "SGD", "Adam", "clip_grad_norm"]


# Names beyond the built-ins come from plugins (the built-ins arrive through the same hook).
__getattr__, __dir__ = extension_namespace("needle.optim", "optimizers")
