"""The hooks a needle plugin may implement.

A plugin is a module named by an entry point in group ``needle``::

    [project.entry-points.needle]
    cpu = "needle_cpu.plugin"

It implements any of the hooks below with the :data:`needle.plugins.hookimpl`
marker. Every hook returns plain data; nothing heavy is imported while the
entry points are scanned (a backend's kernels are imported on first use).
Core's own built-in modules, optimizers and datasets register through these
same hooks.
"""

from __future__ import annotations

from typing import Any

import pluggy

__all__ = [
    "hookspec",
    "hookimpl",
    "needle_backends",
    "needle_nn_modules",
    "needle_optimizers",
    "needle_datasets",
    "needle_transforms",
    "needle_communicators",
]

hookspec = pluggy.HookspecMarker("needle")
hookimpl = pluggy.HookimplMarker("needle")


@hookspec
def needle_backends() -> list[Any]:
    """Return the backends this plugin provides, as a list of
    :class:`needle.plugins.BackendSpec`.

    A spec only *describes* the backend (name, kernel module path, contract
    version, preference); core checks the contract version before it imports
    the kernel module, and imports it only when the device is first used.
    """


@hookspec
def needle_nn_modules() -> dict[str, Any]:
    """Return ``{name: Module subclass}``; each appears as ``needle.nn.<name>``."""


@hookspec
def needle_optimizers() -> dict[str, Any]:
    """Return ``{name: Optimizer subclass}``; each appears as ``needle.optim.<name>``."""


@hookspec
def needle_datasets() -> dict[str, Any]:
    """Return ``{name: Dataset subclass}``; each appears as ``needle.data.<name>``."""


@hookspec
def needle_transforms() -> dict[str, Any]:
    """Return ``{name: Transform subclass}``; each appears as ``needle.data.<name>``."""


@hookspec
def needle_communicators() -> list[Any]:
    """Return the communicators this plugin provides, as a list of
    :class:`needle.plugins.CommunicatorSpec`.

    A communicator moves buffers between the processes of a distributed job
    (all-reduce, broadcast, all-gather, barrier) for :mod:`needle.distributed`.
    Like a backend spec, a communicator spec only *describes* it: its module
    (which may import MPI, NCCL, ...) is imported when the communicator is first
    used or listed, never while the entry points are scanned.
    """
