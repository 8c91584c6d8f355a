"""needle's plugin system: pluggy hooks found through the ``needle`` entry-point group.

Writing a backend plugin takes one module::

    from needle.plugins import BackendSpec, hookimpl

    @hookimpl
    def needle_backends():
        return [BackendSpec(name="mydev", module="my_backend.kernels", contract_version=1)]

and one entry point, ``[project.entry-points.needle] mydev = "my_backend.plugin"``.
"""

from __future__ import annotations

from dataclasses import dataclass

from .hookspecs import hookimpl, hookspec

__all__ = ["BackendSpec", "CommunicatorSpec", "hookimpl", "hookspec"]


@dataclass(frozen=True)
class BackendSpec:
    """What a plugin says about one backend, without importing its kernels.

    Attributes:
        name: the device name users pass to ``ndl.device(name)`` (``"cpu"``).
        module: import path of the kernel module implementing :mod:`needle.contract`
            (``"needle_cpu._ext"``). Imported when the device is first used. If it
            defines ``unavailable_reason()``, core calls it right after import: a
            string return means the backend is installed but cannot run here (no
            GPU, say), and the string is shown to users.
        contract_version: the :data:`needle.contract.CONTRACT_VERSION` the backend
            was built for; a mismatch is recorded and the backend is skipped.
        priority: preference when choosing the default device; higher wins
            (numpy 0, cpu 100).
        accelerator: True for devices (GPUs) that an implicit default never picks.
        distribution: the PyPI distribution that provides it, for messages.
    """

    name: str
    module: str
    contract_version: int
    priority: int = 0
    accelerator: bool = False
    distribution: str = ""


@dataclass(frozen=True)
class CommunicatorSpec:
    """What a plugin says about one communicator of :mod:`needle.distributed`.

    Attributes:
        name: the name users pass to ``needle.distributed.init(name)`` (``"mpi"``).
        module: import path of the module that implements it, imported on first use.
            It defines ``create()``, returning an object that follows
            :class:`needle.distributed.Communicator`; optionally ``unavailable_reason()``
            (a string when it cannot run here, such as a missing library, else None) and
            ``launched()`` (True when this process was started by the communicator's
            launcher, such as ``mpiexec``: ``init()`` without a name then picks it).
        priority: preference among launched communicators; higher wins.
        distribution: the PyPI distribution that provides it, for messages.
        launcher: how jobs using it are started (``"mpiexec -n N"``), for messages.
    """

    name: str
    module: str
    priority: int = 0
    distribution: str = ""
    launcher: str = ""
