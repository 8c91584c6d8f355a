"""The plugin module named by the entry point: hooks only, nothing heavy at import."""

from __future__ import annotations

from typing import Any

from needle.plugins import hookimpl

__all__ = ["needle_nn_modules", "needle_optimizers", "needle_datasets", "needle_transforms"]


@hookimpl
def needle_nn_modules() -> dict[str, Any]:
    from .extras import Swish

    return {"Swish": Swish}


@hookimpl
def needle_optimizers() -> dict[str, Any]:
    from .extras import SignSGD

    return {"SignSGD": SignSGD}


@hookimpl
def needle_datasets() -> dict[str, Any]:
    from .extras import CountingDataset

    return {"CountingDataset": CountingDataset}


@hookimpl
def needle_transforms() -> dict[str, Any]:
    from .extras import AddOne

    return {"AddOne": AddOne}
