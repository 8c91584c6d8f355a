"""Core's built-in communicator, registered through the same hook as plugins' ones."""

from __future__ import annotations

from ..plugins import CommunicatorSpec, hookimpl

__all__ = ["needle_communicators"]


@hookimpl
def needle_communicators() -> list[CommunicatorSpec]:
    """``local``: a world of one process, the fallback when no launcher started this one."""
    return [
        CommunicatorSpec(
            name="local",
            module="needle.distributed.local",
            priority=-1000,
            distribution="needle-core",
        )
    ]
