"""The hooks a needle plugin may implement.

A plugin is a module named by an entry point in group ``needle``::

    [project.entry-points.needle]
    cpu = "needle_cpu.plugin"

It implements any of the hooks below with the :data:`needle.plugins.hookimpl`
marker. needle calls each hook through pluggy once, when the plugin registers
(entry points register on first device use), and checks what it returns then:
a function named like a hook but not marked, a marked function that is no hook,
or a return value of the wrong shape fails the plugin, and so does a name that
another plugin or core already has. Every hook returns plain data; nothing heavy
is imported while the entry points are scanned (a backend's kernels are imported
on first use). Core's own built-in modules, optimizers, datasets and transforms
register through these same hooks (``needle.nn._plugin`` and its siblings); they
are also imported directly into their packages, which keeps ``needle.nn.Linear``
a plain attribute.
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
    the kernel module, and imports it only when the device is first used. Two
    plugins declaring one device name make it unusable until the user disables
    one of them; the error names both.
    """


@hookspec
def needle_nn_modules() -> dict[str, Any]:
    """Return ``{name: Module subclass}``; each appears as ``needle.nn.<name>``.

    Names are public identifiers. One that ``needle.nn`` already has is refused; one
    that two plugins provide is usable from neither (the error names both).
    """


@hookspec
def needle_optimizers() -> dict[str, Any]:
    """Return ``{name: Optimizer subclass}``; each appears as ``needle.optim.<name>``.

    The rules of :func:`needle_nn_modules` apply.
    """


@hookspec
def needle_datasets() -> dict[str, Any]:
    """Return ``{name: Dataset subclass}``; each appears as ``needle.data.<name>``.

    The rules of :func:`needle_nn_modules` apply; datasets and transforms share
    ``needle.data``, so their names may not clash either.
    """


@hookspec
def needle_transforms() -> dict[str, Any]:
    """Return ``{name: Transform subclass}``; each appears as ``needle.data.<name>``.

    The rules of :func:`needle_datasets` apply.
    """


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
