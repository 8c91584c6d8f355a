"""The plugin manager: finds plugins through entry points, once, and isolates their failures.

Nothing here runs at ``import needle``. The ``needle`` entry-point group is
scanned on first device use (or when ``needle info`` asks); each entry point
is loaded in isolation and any failure is recorded with the distribution, the
phase and the cause, so one broken plugin never breaks another. A backend's
kernel module is imported only when its device is first used, after its
contract version has been checked.

Every hook is called through pluggy (``pm.hook``), once, when its plugin
registers: a function named like a hook but not marked ``@hookimpl`` is
reported, not used, and so is a marked function that matches no hook. What the
hooks return is checked then too, so a clash is reported when the plugin that
causes it registers: two plugins declaring one backend name, or providing one
extension name, make that name unusable (the error names both, until the user
chooses one with ``NEEDLE_DISABLE_PLUGINS`` or ``NEEDLE_PLUGINS``), and a plugin
cannot shadow a name core already has (``needle.nn.Linear``).

Environment:

* ``NEEDLE_PLUGIN_AUTOLOAD=0``: load no entry points (register plugins by hand).
* ``NEEDLE_PLUGINS=a,b``: load only these entry points (by entry-point or distribution name).
* ``NEEDLE_DISABLE_PLUGINS=a,b``: never load these (shown as blocked; blocked in pluggy too).
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
#: The module where each kind of extension appears; datasets and transforms share one.
EXTENSION_NAMESPACES = {
    "nn_modules": "needle.nn",
    "optimizers": "needle.optim",
    "datasets": "needle.data",
    "transforms": "needle.data",
}
HOOKS = tuple(name for name in hookspecs.__all__ if name.startswith("needle_"))


class PluginError(RuntimeError):
    """A plugin could not be loaded, registered or used."""


@dataclass
class PluginRecord:
    """One plugin: where it came from and what happened when it was loaded.

    ``name`` is the entry-point name (``name[distribution]`` when another plugin already
    has that name). ``status`` is one of ``loaded``, ``failed``, ``blocked`` (disabled by
    the environment); ``phase`` and ``cause`` explain a failure or block.
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
    ``unavailable`` (installed but cannot run here), ``failed``, ``skipped``
    (built for another contract version), or ``conflict`` (declared by two
    plugins). ``reason`` says why when not usable.
    """

    spec: BackendSpec
    plugin: str
    status: str = "registered"
    reason: str = ""
    module: ModuleType | None = field(default=None, repr=False)
    capabilities: tuple[str, ...] = ()
    dtypes: dict[str, tuple[str, ...]] = field(default_factory=dict)
    claimed_by: list[str] = field(default_factory=list)


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


def _choose(names: list[str]) -> str:
    """How the user picks one of the plugins ``names`` that claim one name."""
    others = [", ".join(n for n in names if n != keep) for keep in names]
    return (
        "choose one by disabling the other"
        + ("s" if len(names) > 2 else "")
        + ": "
        + (" or ".join(f"NEEDLE_DISABLE_PLUGINS={o}" for o in others))
    )


def _failure_message(records: list[PluginRecord]) -> str:
    return "; ".join(
        f"plugin {r.name!r} ({r.distribution or 'no distribution'}) failed during {r.phase}: "
        f"{r.cause}"
        for r in records
    )


class _HookError(Exception):
    """A hook of one plugin raised or returned something unusable (phase, message)."""

    def __init__(self, phase: str, message: str) -> None:
        super().__init__(message)
        self.phase = phase


class _State:
    """Everything the manager knows; one instance, rebuilt by :func:`reset`."""

    def __init__(self) -> None:
        self.pm = pluggy.PluginManager("needle")
        self.pm.add_hookspecs(hookspecs)
        self.plugins: dict[str, PluginRecord] = {}
        self.backends: dict[str, BackendRecord] = {}
        self.scanned = False
        self.builtins_registered = False
        # kind -> {name: (object, plugin name)}; names claimed twice move to conflicts.
        self.extensions: dict[str, dict[str, tuple[Any, str]]] = {k: {} for k in EXTENSION_HOOKS}
        # namespace -> {name: the plugins that provide it}, for names provided more than once
        self.conflicts: dict[str, dict[str, list[str]]] = {
            ns: {} for ns in EXTENSION_NAMESPACES.values()
        }
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

    def fail_others(self, names: list[str], current: str, phase: str, message: str) -> None:
        """Record a clash on the plugins that registered before ``current`` too.

        Never raises: ``current``'s own failure, recorded next, raises in strict mode.
        """
        for name in names:
            record = self.plugins.get(name)
            if name != current and record is not None and record.status != "failed":
                record.status, record.phase, record.cause = "failed", phase, message
                if self.scanning:
                    self.scan_failures.append(record)

    def describe(self, plugin: str) -> str:
        """``'name' (distribution)`` for messages."""
        record = self.plugins.get(plugin)
        dist = record.distribution if record is not None and record.distribution else ""
        return f"plugin {plugin!r} ({dist or 'no distribution'})"

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
        found = metadata.entry_points(group=ENTRY_POINT_GROUP)
        for ep in sorted(found, key=lambda e: (e.name, e.dist.name if e.dist else "", e.value)):
            dist = ep.dist.name if ep.dist is not None else ""
            name = ep.name if ep.name not in self.plugins else f"{ep.name}[{dist or ep.value}]"
            record = PluginRecord(
                name=name,
                distribution=dist,
                version=ep.dist.version if ep.dist is not None else "",
                value=ep.value,
            )
            self.plugins[name] = record
            names = {ep.name, dist}
            cause = ""
            if deny and names & deny:
                cause = "disabled by NEEDLE_DISABLE_PLUGINS"
            elif allow is not None and not names & allow:
                cause = "not in NEEDLE_PLUGINS"
            if cause:
                record.status, record.phase, record.cause = "blocked", "load", cause
                self.pm.set_blocked(name)
                continue
            try:
                plugin = ep.load()
            except BaseException as exc:  # noqa: BLE001 - a broken plugin may raise anything
                if isinstance(exc, KeyboardInterrupt):
                    raise
                self.fail(record, "import", exc)
                continue
            self.add(plugin, record)

    # ------------------------------------------------------------------ registration

    def add(self, plugin: Any, record: PluginRecord) -> None:
        """Register ``plugin`` with pluggy, call its hooks once through pluggy, check and keep
        what they return."""
        if self.pm.is_blocked(record.name):
            record.status, record.phase = "blocked", "register"
            record.cause = record.cause or "blocked (NEEDLE_DISABLE_PLUGINS or NEEDLE_PLUGINS)"
            self.plugins[record.name] = record
            return
        try:
            self.pm.register(plugin, name=record.name)
        except BaseException as exc:  # noqa: BLE001
            if isinstance(exc, KeyboardInterrupt):
                raise
            self.fail(record, "register", exc)
            return
        self.plugins[record.name] = record
        try:
            self._check_hook_names(plugin)
            specs = self._backend_specs(plugin)
            provided = {kind: self._extension_table(plugin, kind) for kind in EXTENSION_HOOKS}
            communicator_specs = _communicator_specs(self, plugin)  # the communicators section
        except _HookError as exc:
            self.pm.unregister(plugin)
            self.fail(record, exc.phase, str(exc))
            return
        problems: list[tuple[str, str]] = []
        for spec in specs:
            problem = self.add_backend(spec, record)
            if problem:
                problems.append(("needle_backends", problem))
        for kind, table in provided.items():
            for name, value in table.items():
                problem = self.add_extension(kind, name, value, record.name)
                if problem:
                    problems.append((EXTENSION_HOOKS[kind], problem))
        problems += [("needle_communicators", p) for p in _keep(self, communicator_specs, record)]
        if problems:
            self.fail(record, problems[0][0], "; ".join(message for _, message in problems))

    def _call(self, plugin: Any, hook: str) -> list[Any]:
        """The results of ``plugin``'s implementation of ``hook``, called through pluggy."""
        others = [p for p in self.pm.get_plugins() if p is not plugin]
        caller = self.pm.subset_hook_caller(hook, remove_plugins=others)
        try:
            return list(caller())
        except BaseException as exc:  # noqa: BLE001 - a broken hook may raise anything
            if isinstance(exc, KeyboardInterrupt):
                raise
            raise _HookError(hook, _describe(exc)) from exc

    def _check_hook_names(self, plugin: Any) -> None:
        """Refuse a marked function that is no hook, and a hook-named function left unmarked."""
        for caller in self.pm.get_hookcallers(plugin) or ():
            if not caller.has_spec():
                raise _HookError(
                    "register",
                    f"implements {caller.name!r}, which is not a needle hook "
                    f"(the hooks are {', '.join(HOOKS)})",
                )
        for hook in HOOKS:
            if not callable(getattr(plugin, hook, None)):
                continue
            impls = getattr(self.pm.hook, hook).get_hookimpls()
            if not any(impl.plugin is plugin for impl in impls):
                raise _HookError(
                    "register",
                    f"defines {hook} without the @hookimpl marker "
                    "(from needle.plugins import hookimpl), so needle cannot call it",
                )

    def _specs(self, plugin: Any, hook: str, spec_type: type) -> list[Any]:
        """The specs ``plugin``'s ``hook`` returns, through pluggy; ``_HookError`` when they
        are not a list of ``spec_type``."""
        specs: list[Any] = []
        for result in self._call(plugin, hook):
            try:
                items = list(result)
            except TypeError:
                raise _HookError(
                    hook,
                    f"{hook} returned {type(result).__name__}, not a list of {spec_type.__name__}",
                ) from None
            for spec in items:
                if not isinstance(spec, spec_type):
                    raise _HookError(hook, f"{hook} returned {spec!r}, not a {spec_type.__name__}")
            specs.extend(items)
        return specs

    def _backend_specs(self, plugin: Any) -> list[BackendSpec]:
        return self._specs(plugin, "needle_backends", BackendSpec)

    def _extension_table(self, plugin: Any, kind: str) -> dict[str, Any]:
        hook = EXTENSION_HOOKS[kind]
        table: dict[str, Any] = {}
        for result in self._call(plugin, hook):
            if not isinstance(result, dict):
                raise _HookError(
                    hook, f"{hook} returned {type(result).__name__}, not a dict {{name: class}}"
                )
            for name, value in result.items():
                if not isinstance(name, str) or not name.isidentifier() or name.startswith("_"):
                    raise _HookError(
                        hook, f"{hook} returned the name {name!r}; names are public identifiers"
                    )
                if value is None:
                    raise _HookError(hook, f"{hook} returned None for {name!r}")
                table[name] = value
        return table

    def add_backend(self, spec: BackendSpec, record: PluginRecord) -> str:
        """Keep one declared backend; a message when its name is already taken, else ''."""
        existing = self.backends.get(spec.name)
        if existing is not None:
            if existing.status == "loaded":
                return (
                    f"backend {spec.name!r} is already provided by "
                    f"{self.describe(existing.plugin)} and in use"
                )
            earlier = list(existing.claimed_by)
            existing.claimed_by.append(record.name)
            existing.status, existing.module = "conflict", None
            claims = " and ".join(self.describe(p) for p in existing.claimed_by)
            existing.reason = (
                f"backend {spec.name!r} is declared by {claims}: {_choose(existing.claimed_by)}"
            )
            self.fail_others(earlier, record.name, "needle_backends", existing.reason)
            return existing.reason
        backend = BackendRecord(spec=spec, plugin=record.name, claimed_by=[record.name])
        if spec.contract_version not in contract.SUPPORTED_VERSIONS:
            supported = contract.SUPPORTED_VERSIONS
            backend.status = "skipped"
            update = spec.distribution or record.distribution or f"plugin {record.name!r}"
            backend.reason = (
                f"built for backend contract v{spec.contract_version}, this needle-core speaks "
                f"v{supported[0]} to v{supported[-1]}; install a version of {update} built "
                f"for one of them"
            )
        self.backends[spec.name] = backend
        return ""

    def add_extension(self, kind: str, name: str, value: Any, plugin: str) -> str:
        """Keep one extension; a message when it clashes, else ''."""
        namespace = EXTENSION_NAMESPACES[kind]
        module = importlib.import_module(namespace)
        builtin = vars(module).get(name, _MISSING)
        if builtin is not _MISSING and builtin is not value:
            return (
                f"{kind} name {name!r} is already {namespace}.{name}, part of needle-core, so "
                f"the one of {self.describe(plugin)} would never be used"
            )
        conflicts = self.conflicts[namespace]
        if name in conflicts:
            conflicts[name].append(plugin)
        else:
            holder = next(
                (k for k, table in self.extensions.items()
                 if EXTENSION_NAMESPACES[k] == namespace and name in table),
                None,
            )  # fmt: skip
            if holder is None:
                self.extensions[kind][name] = (value, plugin)
                return ""
            other_value, owner = self.extensions[holder][name]
            if other_value is value:
                return ""
            del self.extensions[holder][name]
            conflicts[name] = [owner, plugin]
        message = self.conflict(namespace, name)
        self.fail_others(conflicts[name], plugin, EXTENSION_HOOKS[kind], message)
        return message

    def conflict(self, namespace: str, name: str) -> str:
        """Why ``namespace.name`` is unusable ('' when it is not claimed twice)."""
        claimants = self.conflicts.get(namespace, {}).get(name)
        if not claimants:
            return ""
        return (
            f"name {name!r} ({namespace}.{name}) is provided by "
            f"{' and '.join(self.describe(p) for p in claimants)}: {_choose(claimants)}"
        )

    # ------------------------------------------------------------------ backends

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
                reason = str(reason) if reason else ""
            except BaseException as exc:  # noqa: BLE001 - SystemExit included: it must not escape
                if isinstance(exc, KeyboardInterrupt):
                    raise
                reason = f"availability check failed: {_describe(exc)}"
            if reason:
                backend.status, backend.reason = "unavailable", reason
                return backend
            try:
                version = backend.spec.contract_version
                contract.check_backend(module, name, version)
                capabilities = contract.capabilities(module, version)
                dtypes = contract.dtypes(module, version)
            except contract.ContractError as exc:
                backend.status, backend.reason = "failed", str(exc)
                self.fail(record, "contract check", backend.reason)
                return backend
            except Exception as exc:  # noqa: BLE001 - a module may fail attribute lookups
                backend.status = "failed"
                backend.reason = f"checking the contract: {_describe(exc)}"
                self.fail(record, "contract check", backend.reason)
                return backend
            backend.status, backend.module = "loaded", module
            backend.capabilities, backend.dtypes = capabilities, dtypes
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


_MISSING = object()
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

    Its hooks are called at once; its backends and extensions join those found through
    entry points. Problems are recorded on the returned record (raised in strict mode).
    """
    _state.scan()
    name = name or getattr(plugin, "__name__", None) or repr(plugin)
    record = PluginRecord(name=name, distribution=distribution, value=name)
    with _state.lock:
        _state.add(plugin, record)
    return record


def extensions(kind: str) -> dict[str, Any]:
    """``{name: object}`` from every plugin's hook for ``kind``, built-ins included.

    ``kind`` is one of ``nn_modules``, ``optimizers``, ``datasets``, ``transforms``.
    A name that two plugins provide is left out (see :func:`extension_namespace`).
    """
    if kind not in EXTENSION_HOOKS:
        raise ValueError(f"unknown extension kind {kind!r}; known: {', '.join(EXTENSION_HOOKS)}")
    _state.scan()
    _state.register_builtins()
    return {name: value for name, (value, _) in _state.extensions[kind].items()}


def extension_namespace(module: str, *kinds: str) -> tuple[Any, Any]:
    """``(__getattr__, __dir__)`` for a package whose extra names come from plugins.

    ``needle.nn`` uses ``extension_namespace("needle.nn", "nn_modules")``: its built-ins
    import directly, and any other name is looked up in what plugins registered for
    ``kinds``. A name two plugins provide raises AttributeError naming both.
    """

    def __getattr__(name: str) -> Any:
        if not name.startswith("__"):
            for kind in kinds:
                found = extensions(kind)
                if name in found:
                    return found[name]
            clash = _state.conflict(module, name)
            if clash:
                raise AttributeError(f"module {module!r} has no usable attribute {name!r}: {clash}")
        raise AttributeError(
            f"module {module!r} has no attribute {name!r} (not built in, and no installed "
            f"plugin provides one: `needle info` lists plugins)"
        )

    def __dir__() -> list[str]:
        names = set(vars(importlib.import_module(module)))
        for kind in kinds:
            names |= set(extensions(kind))
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


def _communicator_specs(state: _State, plugin: Any) -> list[CommunicatorSpec]:
    """The communicators ``plugin`` declares, through pluggy; ``_HookError`` when malformed."""
    return state._specs(plugin, "needle_communicators", CommunicatorSpec)


def _keep(state: _State, specs: list[CommunicatorSpec], record: PluginRecord) -> list[str]:
    """Record ``specs``; a message for each name another plugin already provides."""
    problems = []
    for spec in specs:
        if spec.name in state.communicators:
            other = state.communicators[spec.name].plugin
            problems.append(f"communicator {spec.name!r} is already provided by plugin {other!r}")
            continue
        state.communicators[spec.name] = CommunicatorRecord(spec=spec, plugin=record.name)
    return problems


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
