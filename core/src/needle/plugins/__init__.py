"""needle's plugin system: pluggy hooks found through the ``needle`` entry-point group.

Writing a backend plugin takes one module::

    from needle.plugins import BackendSpec, hookimpl

    @hookimpl
    def needle_backends():
        return [BackendSpec(name="mydev", module="my_backend.kernels", contract_version=1)]

and one entry point, ``[project.entry-points.needle] mydev = "my_backend.plugin"``.
"""

from __future__ import annotations

import math
import numbers
import re
from dataclasses import dataclass

from .hookspecs import hookimpl, hookspec

__all__ = ["BackendSpec", "CommunicatorSpec", "hookimpl", "hookspec"]


@dataclass(frozen=True)
class BackendSpec:
    """What a plugin says about one backend, without importing its kernels.

    Every field is checked when the spec is made: a wrong type or value raises
    TypeError or ValueError naming the field, and the plugin that returned it is
    recorded as failed (no other backend is affected).

    Attributes:
        name: the device name users pass to ``ndl.device(name)`` (``"cpu"``): a letter,
            then letters, digits, ``_``, ``-`` or ``.``. Two plugins declaring one name
            is an error naming both, until the user disables one of them
            (``NEEDLE_DISABLE_PLUGINS``) or allows only one (``NEEDLE_PLUGINS``).
        module: import path of the kernel module implementing :mod:`needle.contract`
            (``"needle_cpu._ext"``). Imported when the device is first used. If it
            defines ``unavailable_reason()``, core calls it right after import: a
            string return means the backend is installed but cannot run here (no
            GPU, say), and the string is shown to users.
        contract_version: the :data:`needle.contract.CONTRACT_VERSION` the backend
            was built for (a positive int); a mismatch is recorded and the backend is
            skipped, with a message saying which distribution to update.
        priority: preference when choosing the default device; higher wins
            (numpy 0, cpu 100). Any finite number.
        accelerator: True for devices (GPUs) that an implicit default never picks.
        distribution: the PyPI distribution that provides the backend (``"needle-cpu"``),
            named in messages such as "install a matching needle-cpu". When empty, the
            distribution that holds the plugin's entry point is named instead.
    """

    name: str
    module: str
    contract_version: int
    priority: float = 0
    accelerator: bool = False
    distribution: str = ""

    def __post_init__(self) -> None:
        if not isinstance(self.name, str):
            raise TypeError(f"BackendSpec.name must be a string, got {self.name!r}")
        if not _NAME.fullmatch(self.name):
            raise ValueError(
                f"BackendSpec.name {self.name!r} is not a device name (a letter, then letters, "
                "digits, '_', '-' or '.')"
            )
        if not isinstance(self.module, str):
            raise TypeError(f"BackendSpec.module must be a string, got {self.module!r}")
        if not self.module or not all(part.isidentifier() for part in self.module.split(".")):
            raise ValueError(f"BackendSpec.module {self.module!r} is not a module path")
        if not _is_int(self.contract_version):
            raise TypeError(
                f"BackendSpec.contract_version must be an int, got {self.contract_version!r}"
            )
        if self.contract_version < 1:
            raise ValueError(
                f"BackendSpec.contract_version must be 1 or more, got {self.contract_version}"
            )
        if isinstance(self.priority, bool) or not isinstance(self.priority, numbers.Real):
            raise TypeError(f"BackendSpec.priority must be a number, got {self.priority!r}")
        if not math.isfinite(self.priority):
            raise ValueError(f"BackendSpec.priority must be finite, got {self.priority!r}")
        if not isinstance(self.accelerator, bool):
            raise TypeError(
                f"BackendSpec.accelerator must be True or False, got {self.accelerator!r}"
            )
        if not isinstance(self.distribution, str):
            raise TypeError(f"BackendSpec.distribution must be a string, got {self.distribution!r}")


_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_.-]*")


def _is_int(value: object) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


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
