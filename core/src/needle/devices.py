"""Devices: a name plus the backend module that implements the contract for it.

``ndl.device("cpu")`` returns the same hashable :class:`BackendDevice` every
time. Backends come from plugins (:mod:`needle.plugins.manager`); a backend
that is installed but cannot run is *unavailable* with a reason, and asking
for it raises :class:`DeviceUnavailableError` with that reason. The default
device is ``NEEDLE_DEVICE`` when set, else the available non-accelerator
backend with the highest priority (C++ before numpy).
"""

from __future__ import annotations

import os
import threading
import weakref
from collections.abc import Sequence
from typing import Any

import numpy as np

__all__ = [
    "BackendDevice",
    "DeviceError",
    "DeviceUnavailableError",
    "UnknownDeviceError",
    "device",
    "cpu",
    "cuda",
    "cpu_numpy",
    "default_device",
    "all_devices",
    "KNOWN_DISTRIBUTIONS",
    "INSTALL_HINT",
    "install_hint",
]

#: Where the devices named by this project come from, for "pip install ..." hints.
KNOWN_DISTRIBUTIONS = {"numpy": "needle-numpy", "cpu": "needle-cpu", "cuda": "needle-cuda"}


def install_hint(distribution: str) -> str:
    """How to install one of this project's distributions (they are not on PyPI yet)."""
    return (
        f"from a clone of needle: pip install ./plugins/{distribution.replace('-', '_')} "
        f"(once {distribution} is published on PyPI: pip install {distribution})"
    )


#: What to install when there is no backend at all.
INSTALL_HINT = (
    "install a backend from a clone of needle: pip install ./plugins/needle_cpu "
    "(or ./plugins/needle_numpy); once they are published on PyPI: pip install needle-cpu "
    "(or needle-numpy)"
)
_ALIASES = {"cpu_numpy": "numpy"}
_COURSE_NAMES = {v: k for k, v in _ALIASES.items()}


class DeviceError(RuntimeError):
    """Base class of device errors."""


class UnknownDeviceError(DeviceError, ValueError):
    """No installed plugin provides a device of that name."""


class DeviceUnavailableError(DeviceError):
    """The backend is installed but cannot run here (or failed to load)."""


class BackendDevice:
    """A device: its name and its backend module (``mod``), which implements the contract.

    Devices compare and hash by name. Besides ``mod`` they offer the course's
    helpers (``empty``, ``full``, ``rand``, ``randn``, ``one_hot``, ...); all
    randomness is drawn on the host from numpy's global RNG, so a seeded run
    draws the same numbers on every backend.
    """

    __slots__ = (
        "name", "mod", "capabilities", "_caps", "version", "dtypes", "alloc", "__weakref__"
    )  # fmt: skip

    def __init__(
        self,
        name: str,
        mod: Any,
        capabilities: Sequence[str] = (),
        version: int | None = None,
        dtypes: dict[str, Sequence[str]] | None = None,
    ) -> None:
        from . import contract

        self.name = name
        self.mod = mod
        self.capabilities = tuple(capabilities)
        self._caps = frozenset(capabilities)
        #: the backend contract version the backend was built for
        self.version = contract.CONTRACT_VERSION if version is None else version
        usable = mod is not None and not isinstance(mod, _Unavailable)
        if dtypes is None:
            dtypes = contract.dtypes(mod, self.version) if usable else {}
        #: ``{kernel group: frozenset of dtype names}`` the backend accepts
        self.dtypes = {group: frozenset(names) for group, names in dtypes.items()}
        #: ``alloc(size, dtype)``: a new handle (v1 backends allocate float32 only)
        if not usable:
            self.alloc = mod.fail if isinstance(mod, _Unavailable) else None
        else:
            self.alloc = _v1_alloc(mod) if self.version == 1 else mod.Array
            _LIVE[id(self)] = self

    def __getattr__(self, attr: str) -> Any:
        # Course code reaches backend functions through the device (``device.matmul_tiled``,
        # ``device.__tile_size__``); only names the slots do not hold get here.
        if attr in BackendDevice.__slots__:
            raise AttributeError(attr)
        try:
            return getattr(self.mod, attr)
        except AttributeError:
            raise AttributeError(
                f"needle device {self.name!r} (backend {getattr(self.mod, '__name__', '?')}) "
                f"has no attribute {attr!r}"
            ) from None

    def has(self, capability: str) -> bool:
        """True when the backend declares the optional ``capability`` (``"conv2d"``, ...)."""
        return capability in self._caps

    def __eq__(self, other: object) -> bool:
        return isinstance(other, BackendDevice) and other.name == self.name

    def __hash__(self) -> int:
        return hash(("needle.device", self.name))

    def __repr__(self) -> str:
        # As the course prints its devices: ``cpu()``, ``cuda()``, ``cpu_numpy()``.
        return f"{_COURSE_NAMES.get(self.name, self.name)}()"

    __str__ = __repr__

    def enabled(self) -> bool:
        """True when this device can run here (see ``reason`` when it cannot)."""
        return not isinstance(self.mod, _Unavailable)

    @property
    def reason(self) -> str:
        """Why the device cannot run here ("" when it can)."""
        return self.mod.reason if isinstance(self.mod, _Unavailable) else ""

    def supports(self, dtype: str, group: str = "memory") -> bool:
        """True when the backend's ``group`` kernels accept ``dtype`` (see ``needle info``)."""
        return dtype in self.dtypes.get(group, ())

    def synchronize(self) -> None:
        """Wait for every kernel launched on this device (a no-op for synchronous backends)."""
        if self.has("synchronize"):
            self.mod.synchronize()

    def empty_cache(self) -> None:
        """Return the backend's cached free buffers to the system (when it keeps a cache)."""
        if self.has("empty_cache"):
            self.mod.empty_cache()

    def memory_stats(self) -> dict[str, int]:
        """The backend's memory counters (``{}`` when it keeps none)."""
        return dict(self.mod.memory_stats()) if self.has("memory_stats") else {}

    def empty(self, shape: Sequence[int], dtype: Any = "float32") -> Any:
        from .backend_ndarray import NDArray

        return NDArray.make(shape, device=self, dtype=dtype)

    def full(self, shape: Sequence[int], fill_value: Any, dtype: Any = "float32") -> Any:
        from .backend_ndarray import full

        return full(shape, fill_value, dtype=dtype, device=self)

    def zeros(self, *shape: Any, dtype: Any = "float32") -> Any:
        return self.full(_shape_arg(shape), 0, dtype)

    def ones(self, *shape: Any, dtype: Any = "float32") -> Any:
        return self.full(_shape_arg(shape), 1, dtype)

    def rand(self, *shape: Any, dtype: Any = "float32") -> Any:
        """Uniform [0, 1) numbers drawn on the host by ``np.random.rand``."""
        shape = _shape_arg(shape)
        return self._draw(lambda: np.random.rand(*shape), dtype)

    def randn(self, *shape: Any, dtype: Any = "float32") -> Any:
        """Standard normal numbers drawn on the host by ``np.random.randn``."""
        shape = _shape_arg(shape)
        return self._draw(lambda: np.random.randn(*shape), dtype)

    def one_hot(self, n: int, i: Any, dtype: Any = "float32") -> Any:
        """Rows of the ``n``-by-``n`` identity picked by the integer labels ``i``."""
        labels = np.asarray(i.numpy() if hasattr(i, "numpy") else i)
        if labels.dtype.kind == "f" and labels.size and np.any(labels != np.floor(labels)):
            raise ValueError("one_hot labels must be whole numbers")
        if labels.dtype.kind not in "biuf":
            raise TypeError(f"one_hot labels must be integers, not {labels.dtype}")
        if labels.size and (labels.min() < 0 or labels.max() >= n):
            raise IndexError(
                f"one_hot labels must lie in [0, {n}), got {labels.min()}..{labels.max()}"
            )
        # Scatter the ones: np.eye(n)[labels] would build an n x n matrix (400 MB at n=10,000).
        flat = labels.astype(np.int64).reshape(-1)
        out = np.zeros((flat.size, n), dtype=np.float32)
        out[np.arange(flat.size), flat] = 1.0
        return self._from_host(out.reshape(labels.shape + (n,)), dtype)

    def _draw(self, make: Any, dtype: Any) -> Any:
        """Host random numbers as an NDArray (drawn again by every :func:`needle.jit` replay)."""
        from .replay import host_array

        return host_array(make, self, dtype)

    def _from_host(self, arr: np.ndarray, dtype: Any) -> Any:
        from .backend_ndarray import NDArray

        return NDArray.from_numpy(arr, self, dtype=dtype)


class _Unavailable:
    """The backend of a device that cannot run here: any use raises with the reason."""

    __slots__ = ("name", "reason", "error")

    def __init__(self, name: str, error: DeviceError) -> None:
        self.name, self.reason, self.error = name, str(error), error

    def __getattr__(self, attr: str) -> Any:
        if attr.startswith("__") and attr.endswith("__"):
            raise AttributeError(attr)
        self.fail()

    def fail(self, *args: Any) -> Any:
        """Raise the error that says why the device cannot run."""
        raise type(self.error)(self.reason)


#: Every usable device object alive, by identity (devices compare equal by name, and tests
#: may rebuild the registry while older objects live on in arrays): where needle.jit
#: installs its recorders.
_LIVE: weakref.WeakValueDictionary[int, BackendDevice] = weakref.WeakValueDictionary()


def live_devices() -> list[BackendDevice]:
    """Every usable :class:`BackendDevice` object alive in this process (by identity)."""
    return list(_LIVE.values())


def _v1_alloc(mod: Any) -> Any:
    """``alloc(size, dtype)`` for a v1 backend, whose ``Array(size)`` holds float32 only."""
    array = getattr(mod, "Array", None)

    def alloc(size: int, dtype: str = "float32") -> Any:
        if dtype != "float32":  # NDArray checks the dtype table first; this is the last guard
            raise TypeError(f"a contract v1 backend holds float32 only, not {dtype}")
        return array(size)

    return alloc


def _shape_arg(shape: tuple) -> tuple[int, ...]:
    if len(shape) == 1 and isinstance(shape[0], (tuple, list)):
        return tuple(shape[0])
    return tuple(shape)


_devices: dict[str, BackendDevice] = {}
_disabled: dict[str, BackendDevice] = {}
_default: list[BackendDevice] = []
_lock = threading.Lock()


def _reset() -> None:
    _devices.clear()
    _disabled.clear()
    _default.clear()


def _unknown(name: str) -> UnknownDeviceError:
    from .plugins import manager

    known = sorted(manager.backends())
    hint = KNOWN_DISTRIBUTIONS.get(name)
    msg = f"unknown needle device {name!r}; known devices: {', '.join(known) or 'none'}"
    if hint:
        msg += f". It comes with {hint}; install it {install_hint(hint)}"
    else:
        msg += f". Devices come from plugins: {INSTALL_HINT}; or a third-party backend"
    return UnknownDeviceError(msg)


def device(name: str | BackendDevice) -> BackendDevice:
    """The device called ``name`` (``"cpu"``, ``"cuda"``, ``"numpy"``, or a plugin's name).

    Raises:
        UnknownDeviceError: no installed plugin provides it (the message lists the
            known devices and the ``pip install`` that would provide it).
        DeviceUnavailableError: it is installed but cannot run here; the message says why.
    """
    if isinstance(name, BackendDevice):
        if not name.enabled():
            raise name.mod.error
        return name
    if not isinstance(name, str):
        raise TypeError(f"a device name is a string, not {type(name).__name__}")
    name = _ALIASES.get(name, name)
    found = _devices.get(name)
    if found is not None:
        return found
    from .plugins import manager

    with _lock:
        if name in _devices:
            return _devices[name]
        if manager.backend(name) is None:
            raise _unknown(name)
        record = manager.load_backend(name)
        if record.status != "loaded":
            state = {"skipped": "was skipped", "failed": "failed to load"}.get(
                record.status, "is unavailable"
            )
            raise DeviceUnavailableError(f"needle device {name!r} {state}: {record.reason}")
        dev = BackendDevice(
            name, record.module, record.capabilities, record.spec.contract_version, record.dtypes
        )
        _devices[name] = dev
        return dev


def _course_device(name: str) -> BackendDevice:
    """``device(name)``, or, as in the course, a device whose ``enabled()`` is False.

    Using a device that is not enabled (making an array on it) raises the error
    :func:`device` would have raised, with its reason.
    """
    try:
        return device(name)
    except DeviceError as exc:
        found = _disabled.get(name)
        if found is None or found.reason != str(exc):
            found = _disabled[name] = BackendDevice(name, _Unavailable(name, exc))
        return found


def cpu() -> BackendDevice:
    """The C++ CPU device (``needle-cpu``); ``enabled()`` says whether it can run here."""
    return _course_device("cpu")


def cuda() -> BackendDevice:
    """The CUDA device (``needle-cuda``); ``enabled()`` is False without it or without a GPU."""
    return _course_device("cuda")


def cpu_numpy() -> BackendDevice:
    """The numpy reference device (``needle-numpy``); ``enabled()`` says whether it can run."""
    return _course_device("numpy")


def default_device() -> BackendDevice:
    """``NEEDLE_DEVICE`` if set, else the best available CPU-side backend; prints nothing."""
    if _default:
        return _default[0]
    from .plugins import manager

    wanted = os.environ.get("NEEDLE_DEVICE", "").strip()
    if wanted:
        dev = device(wanted)
    else:
        records = sorted(
            (r for r in manager.backends().values() if not r.spec.accelerator),
            key=lambda r: -r.spec.priority,
        )
        dev = None
        for record in records:
            try:
                dev = device(record.spec.name)
                break
            except DeviceError:
                continue
        if dev is None:
            raise DeviceUnavailableError(_nothing_usable())
    _default.append(dev)
    return dev


def _nothing_usable() -> str:
    """Why no backend can be the default: each installed one and its reason, or none."""
    from .plugins import manager

    names = sorted(manager.backends())
    if not names:
        return f"no needle backend is installed; {INSTALL_HINT}"
    why = []
    for name in names:
        record = manager.load_backend(name)  # learns why an accelerator cannot run, too
        source = record.spec.distribution or f"plugin {record.plugin!r}"
        if record.status == "loaded":
            why.append(
                f"{name} ({source}) can run but is an accelerator, never the implicit default "
                f"(choose it: ndl.device({name!r}) or NEEDLE_DEVICE={name})"
            )
        else:
            why.append(f"{name} ({source}) is {record.status}: {record.reason}")
    return (
        f"no installed needle backend can be the default device here: {'; '.join(why)}. "
        f"Fix or replace it ({INSTALL_HINT}); `needle info` shows every plugin"
    )


def all_devices() -> list[BackendDevice]:
    """Every device that can run here, in order of preference (unavailable ones left out)."""
    from .plugins import manager

    out = []
    ranked = sorted(
        manager.backends().values(), key=lambda r: (r.spec.accelerator, -r.spec.priority)
    )
    for record in ranked:
        try:
            out.append(device(record.spec.name))
        except DeviceError:
            continue
    return out
