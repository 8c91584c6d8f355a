"""The plugin manager: finds plugins through entry points, once, and isolates their failures.

Nothing here runs at ``import needle``. The ``needle`` entry-point group is
scanned on first device use (or when ``needle info`` asks); each entry point
is loaded in isolation and any failure is recorded with the distribution, the
phase and the cause, so one broken plugin never breaks another. A backend's
kernel module is imported only when its device is first used, after its
contract version has been checked.

Environment:

* ``NEEDLE_PLUGIN_AUTOLOAD=0``: load no entry points (register plugins by hand).
* ``NEEDLE_PLUGINS=a,b``: load only these entry points (by entry-point or distribution name).
* ``NEEDLE_DISABLE_PLUGINS=a,b``: never load these (shown as blocked).
* ``NEEDLE_STRICT_PLUGINS=1``: a plugin failure raises :class:`PluginError` instead.

Communicators of :mod:`needle.distributed` (hook ``needle_communicators``) are found,
isolated and recorded the same way; see the section at the end of this module.
"""

from __future__ import annotations

import importlib
import os
import threading
from dataclasses import dataclass, field
from importlib import metadata
from types import ModuleType
from typing import Any

import pluggy

from .. import contract
from . import BackendSpec, CommunicatorSpec, hookspecs

__all__ = [
    "PluginError",
    "PluginRecord",
    "BackendRecord",
    "get_manager",
    "plugins",
    "backends",
    "backend",
    "load_backend",
    "register",
    "extensions",
    "extension_namespace",
    "reset",
    "CommunicatorRecord",
    "communicators",
    "load_communicator",
]

ENTRY_POINT_GROUP = "needle"
BUILTIN_EXTENSION_PLUGINS = (
    "needle.nn._plugin",
    "needle.optim._plugin",
    "needle.data._plugin",
    "needle.distributed._plugin",
)
EXTENSION_HOOKS = {
    "nn_modules": "needle_nn_modules",
    "optimizers": "needle_optimizers",
    "datasets": "needle_datasets",
    "transforms": "needle_transforms",
}


class PluginError(RuntimeError):
    """A plugin could not be loaded, registered or used."""


@dataclass
class PluginRecord:
    """One plugin: where it came from and what happened when it was loaded.

    ``status`` is one of ``loaded``, ``failed``, ``blocked`` (disabled by the
    environment); ``phase`` and ``cause`` explain a failure or block.
    """

    name: str
    distribution: str = ""
    version: str = ""
    value: str = ""
    status: str = "loaded"
    phase: str = ""
    cause: str = ""


@dataclass
class BackendRecord:
    """One backend and its state.

    ``status``: ``registered`` (kernels not imported yet), ``loaded``,
    ``unavailable`` (installed but cannot run here), ``failed``, or ``skipped``
    (built for another contract version). ``reason`` says why when not usable.
    """

    spec: BackendSpec
    plugin: str
    status: str = "registered"
    reason: str = ""
    module: ModuleType | None = field(default=None, repr=False)
    capabilities: tuple[str, ...] = ()


def _env_list(name: str) -> set[str] | None:
    raw = os.environ.get(name, "").strip()
    return {x.strip() for x in raw.split(",") if x.strip()} if raw else None


_strict_override: list[bool] = []


def set_strict(strict: bool | None) -> None:
    """Override ``NEEDLE_STRICT_PLUGINS`` (None: follow the environment again).

    The command line turns strictness off: it reports broken plugins, it never raises them.
    """
    _strict_override[:] = [] if strict is None else [strict]


def _strict() -> bool:
    if _strict_override:
        return _strict_override[0]
    return os.environ.get("NEEDLE_STRICT_PLUGINS", "") not in ("", "0", "false", "no")


def _describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"


def _failure_message(records: list[PluginRecord]) -> str:
    return "; ".join(
        f"plugin {r.name!r} ({r.distribution or 'no distribution'}) failed during {r.phase}: "
        f"{r.cause}"
        for r in records
    )


class _State:
    """Everything the manager knows; one instance, rebuilt by :func:`reset`."""

    def __init__(self) -> None:
        self.pm = pluggy.PluginManager("needle")
        self.pm.add_hookspecs(hookspecs)
        self.plugins: dict[str, PluginRecord] = {}
        self.backends: dict[str, BackendRecord] = {}
        self.scanned = False
        self.builtins_registered = False
        self.extension_cache: dict[str, dict[str, Any]] = {}
        self.lock = threading.RLock()
        self.scanning = False
        self.scan_failures: list[PluginRecord] = []
        self.communicators: dict[str, CommunicatorRecord] = {}

    def fail(self, record: PluginRecord, phase: str, exc: BaseException | str) -> None:
        """Record a plugin failure; in strict mode raise it (after the scan, if scanning)."""
        record.status, record.phase = "failed", phase
        record.cause = exc if isinstance(exc, str) else _describe(exc)
        self.plugins.setdefault(record.name, record)
        if self.scanning:  # strict mode raises once every entry point has been tried
            self.scan_failures.append(record)
        elif _strict():
            raise PluginError(_failure_message([record]))

    def scan(self) -> None:
        with self.lock:
            if self.scanned:
                return
            self.scanned = True
            if os.environ.get("NEEDLE_PLUGIN_AUTOLOAD", "1").strip() in ("0", "false", "no"):
                return
            self.scanning = True
            try:
                self._scan_entry_points()
            finally:
                self.scanning = False
            if self.scan_failures and _strict():
                raise PluginError(_failure_message(self.scan_failures))

    def _scan_entry_points(self) -> None:
        allow, deny = _env_list("NEEDLE_PLUGINS"), _env_list("NEEDLE_DISABLE_PLUGINS")
        for ep in sorted(metadata.entry_points(group=ENTRY_POINT_GROUP), key=lambda e: e.name):
            dist = ep.dist.name if ep.dist is not None else ""
            record = PluginRecord(
                name=ep.name,
                distribution=dist,
                version=ep.dist.version if ep.dist is not None else "",
                value=ep.value,
            )
            self.plugins[ep.name] = record
            names = {ep.name, dist}
            if deny and names & deny:
                record.status, record.phase = "blocked", "load"
                record.cause = "disabled by NEEDLE_DISABLE_PLUGINS"
                continue
            if allow is not None and not names & allow:
                record.status, record.phase = "blocked", "load"
                record.cause = "not in NEEDLE_PLUGINS"
                continue
            try:
                plugin = ep.load()
            except BaseException as exc:  # noqa: BLE001 - a broken plugin may raise anything
                if isinstance(exc, KeyboardInterrupt):
                    raise
                self.fail(record, "import", exc)
                continue
            self.add(plugin, record)

    def add(self, plugin: Any, record: PluginRecord) -> None:
        """Register ``plugin`` with pluggy and collect the backends it declares."""
        try:
            self.pm.register(plugin, name=record.name)
        except BaseException as exc:  # noqa: BLE001
            if isinstance(exc, KeyboardInterrupt):
                raise
            self.fail(record, "register", exc)
            return
        self.plugins[record.name] = record
        self.extension_cache.clear()
        if not _add_communicators(self, plugin, record):  # see the communicators section
            return
        impl = getattr(plugin, "needle_backends", None)
        if impl is None:
            return
        try:
            specs = list(impl() or [])
            for spec in specs:
                if not isinstance(spec, BackendSpec):
                    raise TypeError(f"needle_backends returned {spec!r}, not a BackendSpec")
        except BaseException as exc:  # noqa: BLE001
            if isinstance(exc, KeyboardInterrupt):
                raise
            self.pm.unregister(name=record.name)
            self.fail(record, "needle_backends", exc)
            return
        for spec in specs:
            self.add_backend(spec, record)

    def add_backend(self, spec: BackendSpec, record: PluginRecord) -> None:
        if spec.name in self.backends:
            other = self.backends[spec.name].plugin
            self.fail(
                record,
                "needle_backends",
                f"backend {spec.name!r} is already provided by plugin {other!r}",
            )
            return
        backend = BackendRecord(spec=spec, plugin=record.name)
        if spec.contract_version != contract.CONTRACT_VERSION:
            backend.status = "skipped"
            backend.reason = (
                f"built for backend contract v{spec.contract_version}, this needle-core speaks "
                f"v{contract.CONTRACT_VERSION}; install a matching {spec.distribution or 'version'}"
            )
        self.backends[spec.name] = backend

    def load_backend(self, name: str) -> BackendRecord:
        """Import and validate a backend's kernels (once); return its record."""
        with self.lock:
            self.scan()
            backend = self.backends[name]
            if backend.status != "registered":
                return backend
            record = self.plugins[backend.plugin]
            try:
                module = importlib.import_module(backend.spec.module)
            except BaseException as exc:  # noqa: BLE001
                if isinstance(exc, KeyboardInterrupt):
                    raise
                backend.status, backend.reason = (
                    "failed",
                    f"importing {backend.spec.module}: {_describe(exc)}",
                )
                self.fail(record, "kernels", backend.reason)
                return backend
            probe = getattr(module, "unavailable_reason", None)
            try:
                reason = probe() if probe is not None else None
            except Exception as exc:  # noqa: BLE001
                reason = f"availability check failed: {_describe(exc)}"
            if reason:
                backend.status, backend.reason = "unavailable", str(reason)
                return backend
            try:
                contract.check_backend(module, name)
            except contract.ContractError as exc:
                backend.status, backend.reason = "failed", str(exc)
                self.fail(record, "contract check", backend.reason)
                return backend
            backend.status, backend.module = "loaded", module
            backend.capabilities = contract.capabilities(module)
            return backend

    def register_builtins(self) -> None:
        with self.lock:
            if self.builtins_registered:
                return
            self.builtins_registered = True
            for path in BUILTIN_EXTENSION_PLUGINS:
                name = path.rsplit(".", 1)[0]
                record = PluginRecord(name=name, distribution="needle-core", value=path)
                try:
                    module = importlib.import_module(path)
                except ModuleNotFoundError as exc:
                    if exc.name == path:  # that part of core is not there: nothing to register
                        continue
                    self.fail(record, "import", exc)
                    continue
                self.add(module, record)


_state = _State()


def get_manager() -> pluggy.PluginManager:
    """The pluggy manager, with the entry points scanned."""
    _state.scan()
    return _state.pm


def plugins() -> dict[str, PluginRecord]:
    """Every plugin seen, by name (entry-point name, or the name it was registered under)."""
    _state.scan()
    return dict(_state.plugins)


def backends() -> dict[str, BackendRecord]:
    """Every backend declared by a plugin, by device name, kernels not imported."""
    _state.scan()
    return dict(_state.backends)


def backend(name: str) -> BackendRecord | None:
    """The record of backend ``name`` (None when no plugin declares it)."""
    _state.scan()
    return _state.backends.get(name)


def load_backend(name: str) -> BackendRecord:
    """Import, probe and validate backend ``name``'s kernels (once) and return its record."""
    return _state.load_backend(name)


def register(plugin: Any, name: str | None = None, distribution: str = "") -> PluginRecord:
    """Register a plugin object or module by hand (tests, embedding applications).

    Its backends and extensions join those found through entry points.
    """
    _state.scan()
    name = name or getattr(plugin, "__name__", None) or repr(plugin)
    record = PluginRecord(name=name, distribution=distribution, value=name)
    _state.add(plugin, record)
    return record


def extensions(kind: str) -> dict[str, Any]:
    """``{name: object}`` from every plugin's hook for ``kind``, built-ins included.

    ``kind`` is one of ``nn_modules``, ``optimizers``, ``datasets``, ``transforms``.
    Raises :class:`PluginError` naming both plugins when two provide one name.
    """
    if kind not in EXTENSION_HOOKS:
        raise ValueError(f"unknown extension kind {kind!r}; known: {', '.join(EXTENSION_HOOKS)}")
    _state.scan()
    _state.register_builtins()
    cached = _state.extension_cache.get(kind)
    if cached is not None:
        return cached
    hook = getattr(_state.pm.hook, EXTENSION_HOOKS[kind])
    merged: dict[str, Any] = {}
    owner: dict[str, str] = {}
    for impl in hook.get_hookimpls():
        plugin_name = _state.pm.get_name(impl.plugin) or repr(impl.plugin)
        try:
            provided = impl.function() or {}
        except Exception as exc:
            raise PluginError(
                f"plugin {plugin_name!r} failed in {EXTENSION_HOOKS[kind]}: {_describe(exc)}"
            ) from exc
        for key, value in dict(provided).items():
            if key in merged and merged[key] is not value:
                raise PluginError(
                    f"{kind} name {key!r} is provided by both plugin {owner[key]!r} and "
                    f"plugin {plugin_name!r}"
                )
            merged[key], owner[key] = value, plugin_name
    _state.extension_cache[kind] = merged
    return merged


def extension_namespace(module: str, *kinds: str) -> tuple[Any, Any]:
    """``(__getattr__, __dir__)`` for a package whose extra names come from plugins.

    ``needle.nn`` uses ``extension_namespace("needle.nn", "nn_modules")``: its built-ins
    import directly, and any other name is looked up in every plugin's hook for ``kinds``.
    """

    def __getattr__(name: str) -> Any:
        if not name.startswith("__"):
            for kind in kinds:
                found = extensions(kind)
                if name in found:
                    return found[name]
        raise AttributeError(
            f"module {module!r} has no attribute {name!r} (not built in, and no installed "
            f"plugin provides one: `needle info` lists plugins)"
        )

    def __dir__() -> list[str]:
        names = set(vars(importlib.import_module(module)))
        for kind in kinds:
            try:
                names |= set(extensions(kind))
            except PluginError:  # dir() must work even when two plugins clash
                pass
        return sorted(names)

    return __getattr__, __dir__


def reset() -> None:
    """Forget everything (tests): the next use scans the entry points again."""
    global _state
    _state = _State()
    from .. import devices  # the device table caches loaded backends

    devices._reset()


# ---------------------------------------------------------------------------- communicators
# The communicators of needle.distributed: declared by the ``needle_communicators`` hook,
# recorded per plugin like backends, their modules imported only when first used or listed.


@dataclass
class CommunicatorRecord:
    """One communicator and its state.

    ``status``: ``registered`` (module not imported yet), ``loaded``, ``unavailable``
    (installed but cannot run here, ``reason`` says why) or ``failed`` (``reason`` says how).
    """

    spec: CommunicatorSpec
    plugin: str
    status: str = "registered"
    reason: str = ""
    module: ModuleType | None = field(default=None, repr=False)


def _add_communicators(state: _State, plugin: Any, record: PluginRecord) -> bool:
    """Collect the communicators ``plugin`` declares; False (recorded) when its hook fails."""
    impl = getattr(plugin, "needle_communicators", None)
    if impl is None:
        return True
    try:
        specs = list(impl() or [])
        for spec in specs:
            if not isinstance(spec, CommunicatorSpec):
                raise TypeError(f"needle_communicators returned {spec!r}, not a CommunicatorSpec")
    except BaseException as exc:  # noqa: BLE001 - a broken plugin may raise anything
        if isinstance(exc, KeyboardInterrupt):
            raise
        state.pm.unregister(name=record.name)
        state.fail(record, "needle_communicators", exc)
        return False
    for spec in specs:
        if spec.name in state.communicators:
            other = state.communicators[spec.name].plugin
            state.fail(
                record,
                "needle_communicators",
                f"communicator {spec.name!r} is already provided by plugin {other!r}",
            )
            continue
        state.communicators[spec.name] = CommunicatorRecord(spec=spec, plugin=record.name)
    return True


def communicators() -> dict[str, CommunicatorRecord]:
    """Every communicator declared by a plugin (core's ``local`` included), by name."""
    _state.scan()
    _state.register_builtins()
    return dict(_state.communicators)


def load_communicator(name: str) -> CommunicatorRecord:
    """Import and probe communicator ``name``'s module (once) and return its record.

    Raises:
        KeyError: no plugin declares ``name``.
    """
    state = _state
    with state.lock:
        state.scan()
        state.register_builtins()
        comm = state.communicators[name]
        if comm.status != "registered":
            return comm
        record = state.plugins[comm.plugin]
        try:
            module = importlib.import_module(comm.spec.module)
            if not callable(getattr(module, "create", None)):
                raise TypeError(f"{comm.spec.module} defines no create() function")
        except BaseException as exc:  # noqa: BLE001
            if isinstance(exc, KeyboardInterrupt):
                raise
            comm.status, comm.reason = "failed", f"importing {comm.spec.module}: {_describe(exc)}"
            state.fail(record, "communicator", comm.reason)
            return comm
        probe = getattr(module, "unavailable_reason", None)
        try:
            reason = probe() if probe is not None else None
        except Exception as exc:  # noqa: BLE001
            reason = f"availability check failed: {_describe(exc)}"
        comm.module = module  # kept when unavailable too: its launched() explains a failed init
        if reason:
            comm.status, comm.reason = "unavailable", str(reason)
        else:
            comm.status = "loaded"
        return comm
