"""The plugin manager with throwaway plugins: failures are recorded and isolated, env controls work.

Entry points are simulated by writing ``*.dist-info`` folders into a directory on
sys.path (the ``fake_dist`` fixture); other plugins are registered by hand.
"""

from __future__ import annotations

import importlib
import inspect
import re
import sys
from pathlib import Path

import needle as ndl
import pytest
from needle import contract
from needle.plugins import BackendSpec, hookimpl, hookspecs
from needle.plugins.manager import PluginError

REPO = Path(__file__).resolve().parents[1]
BROKEN_SOURCE = 'raise ImportError("libneedle_broken.so: cannot open shared object file")\n'

PLUGIN_SOURCE = """\
from needle.plugins import BackendSpec, hookimpl


@hookimpl
def needle_backends():
    return [BackendSpec(name={name!r}, module={kernels!r}, contract_version={version})]
"""


def _plugin_source(name: str, kernels: str, version: int | None = None) -> str:
    """A plugin declaring device ``name`` with kernel module ``kernels`` (a clone, whose
    contract version it declares unless ``version`` is given)."""
    if version is None:
        version = getattr(sys.modules.get(kernels), "contract_version", contract.CONTRACT_VERSION)
    return PLUGIN_SOURCE.format(name=name, kernels=kernels, version=version)


def _works(name: str) -> None:
    """Device ``name`` computes a sum correctly."""
    t = ndl.Tensor([1.0, 2.0, 3.0], device=name)
    assert (t + t).sum().numpy() == pytest.approx(12.0), f"device {name} computes wrong sums"


# ---------------------------------------------------------------------- broken plugins


@pytest.fixture
def broken(fake_dist):
    """An installed distribution needle-broken whose entry point fails to import."""
    return fake_dist(
        "needle-broken", {"broken": "needle_tests_broken"}, {"needle_tests_broken": BROKEN_SOURCE}
    )


def test_plugin_that_fails_to_import_is_recorded(fresh_plugins, broken, device) -> None:
    record = fresh_plugins.plugins()["broken"]
    assert record.status == "failed"
    assert record.phase == "import"
    assert record.distribution == "needle-broken" and record.version == "0.1"
    assert "ImportError" in record.cause and "libneedle_broken.so" in record.cause, record.cause
    _works(device.name)  # every other backend keeps working
    ndl.default_device()


def test_plugin_that_fails_to_import_raises_in_strict_mode(
    fresh_plugins, broken, monkeypatch
) -> None:
    monkeypatch.setenv("NEEDLE_STRICT_PLUGINS", "1")
    with pytest.raises(PluginError, match=r"'broken' \(needle-broken\).*import.*libneedle_broken"):
        fresh_plugins.plugins()


def test_strict_failure_leaves_no_half_scanned_registry(
    fresh_plugins, fake_dist, backends, device, monkeypatch
) -> None:
    kernels = backends.clone(device.mod, "zzz").__name__
    fake_dist("needle-aaa", {"aaa": "needle_tests_aaa"}, {"needle_tests_aaa": BROKEN_SOURCE})
    fake_dist(
        "needle-zzz",
        {"zzz": "needle_tests_zzz_plugin"},
        {"needle_tests_zzz_plugin": _plugin_source("zzz", kernels)},
    )
    monkeypatch.setenv("NEEDLE_STRICT_PLUGINS", "1")
    with pytest.raises(PluginError):
        fresh_plugins.plugins()
    try:  # raising the failure again is fine; calling zzz unknown is not
        ndl.device("zzz")
    except PluginError:
        pass


def test_plugin_whose_hook_raises_is_recorded(fresh_plugins) -> None:
    class Faulty:
        @hookimpl
        def needle_backends(self):
            raise RuntimeError("cannot enumerate devices")

    record = fresh_plugins.register(Faulty(), name="faulty", distribution="needle-faulty")
    assert (record.status, record.phase) == ("failed", "needle_backends")
    assert "RuntimeError: cannot enumerate devices" in record.cause


def test_plugin_returning_something_else_than_a_spec_is_recorded(fresh_plugins) -> None:
    class Wrong:
        @hookimpl
        def needle_backends(self):
            return [{"name": "dictdev"}]

    record = fresh_plugins.register(Wrong(), name="wrong")
    assert record.status == "failed" and "not a BackendSpec" in record.cause
    assert "dictdev" not in fresh_plugins.backends()


def test_backend_whose_kernels_fail_to_import(fresh_plugins, backends, device) -> None:
    record = backends.register("nokernels", "needle_tests_no_such_kernels", priority=10**6)
    with pytest.raises(ndl.DeviceUnavailableError, match="needle_tests_no_such_kernels") as err:
        ndl.device("nokernels")
    assert "ModuleNotFoundError" in str(err.value)
    assert fresh_plugins.backend("nokernels").status == "failed"
    assert (record.status, record.phase) == ("failed", "kernels")
    assert ndl.default_device().name != "nokernels"
    _works(device.name)


def test_two_plugins_providing_one_device_name(fresh_plugins, backends, device) -> None:
    backends.register("twin", backends.clone(device.mod, "twin"), distribution="needle-twin")

    class Second:
        @hookimpl
        def needle_backends(self):
            return [BackendSpec("twin", "needle_tests_twin_kernels", device.version)]

    second = fresh_plugins.register(Second(), name="second", distribution="needle-second")
    assert second.status == "failed"
    for word in ("'twin'", "'test-twin'", "needle-twin", "'second'", "needle-second"):
        assert word in second.cause, f"{word} not in {second.cause}"
    with pytest.raises(ndl.DeviceUnavailableError, match="(?=.*needle-twin)(?=.*needle-second)"):
        ndl.device("twin")  # neither one wins silently


def test_a_claim_after_the_device_is_in_use_is_refused(fresh_plugins, backends, device) -> None:
    backends.register("busy", backends.clone(device.mod, "busy"))
    _works("busy")

    class Late:
        @hookimpl
        def needle_backends(self):
            return [BackendSpec("busy", "needle_tests_busy_kernels", contract.CONTRACT_VERSION)]

    late = fresh_plugins.register(Late(), name="late")
    assert late.status == "failed" and "'busy'" in late.cause and "in use" in late.cause
    _works("busy")  # the device in use keeps working


# ---------------------------------------------------------------------- contract version


def test_backend_for_another_contract_version_is_skipped(
    fresh_plugins, backends, monkeypatch
) -> None:
    monkeypatch.setenv("NEEDLE_STRICT_PLUGINS", "1")  # a skip is not a failure, even here
    future = contract.CONTRACT_VERSION + 1
    backends.register(
        "future",
        "needle_tests_never_imported",
        contract_version=future,
        distribution="needle-future",
    )
    record = fresh_plugins.backend("future")
    assert record.status == "skipped"
    assert f"v{future}" in record.reason and f"v{contract.CONTRACT_VERSION}" in record.reason
    assert "needle-future" in record.reason, record.reason
    with pytest.raises(ndl.DeviceUnavailableError) as err:
        ndl.device("future")
    assert record.reason in str(err.value)
    assert "needle_tests_never_imported" not in sys.modules, (
        "a skipped backend's kernels were imported"
    )
    assert "future" not in [d.name for d in ndl.all_devices()]


# ---------------------------------------------------------------------- environment


@pytest.fixture
def extra(fake_dist, backends, device):
    """An installed distribution needle-extra whose plugin declares device ``extra``."""
    kernels = backends.clone(device.mod, "extra").__name__
    fake_dist(
        "needle-extra",
        {"extra": "needle_tests_extra_plugin"},
        {"needle_tests_extra_plugin": _plugin_source("extra", kernels)},
    )
    return "needle_tests_extra_plugin"


def test_entry_point_plugin_loads_and_its_device_works(fresh_plugins, extra) -> None:
    record = fresh_plugins.plugins()["extra"]
    assert (record.status, record.distribution, record.value) == ("loaded", "needle-extra", extra)
    _works("extra")


@pytest.mark.parametrize("name", ["extra", "needle-extra"], ids=["entry point", "distribution"])
def test_disabled_plugin_is_blocked(fresh_plugins, extra, monkeypatch, name) -> None:
    monkeypatch.setenv("NEEDLE_DISABLE_PLUGINS", f"someother, {name}")
    record = fresh_plugins.plugins()["extra"]
    assert record.status == "blocked" and "NEEDLE_DISABLE_PLUGINS" in record.cause
    assert extra not in sys.modules, "a blocked plugin was imported"
    with pytest.raises(ndl.UnknownDeviceError):
        ndl.device("extra")


@pytest.mark.parametrize("name", ["alpha", "needle-alpha"], ids=["entry point", "distribution"])
def test_allowlist_loads_only_the_named_plugins(
    fresh_plugins, fake_dist, backends, device, monkeypatch, name
) -> None:
    for dev in ("alpha", "beta"):
        kernels = backends.clone(device.mod, dev).__name__
        fake_dist(
            f"needle-{dev}",
            {dev: f"needle_tests_{dev}_plugin"},
            {f"needle_tests_{dev}_plugin": _plugin_source(dev, kernels)},
        )
    monkeypatch.setenv("NEEDLE_PLUGINS", name)
    plugins = fresh_plugins.plugins()
    assert plugins["alpha"].status == "loaded"
    for other, record in plugins.items():
        if other != "alpha":
            assert record.status == "blocked", f"{other} was not blocked by NEEDLE_PLUGINS={name}"
            assert "NEEDLE_PLUGINS" in record.cause
    assert "needle_tests_beta_plugin" not in sys.modules
    assert sorted(fresh_plugins.backends()) == ["alpha"]
    _works("alpha")


def test_autoload_off_loads_no_entry_points(
    fresh_plugins, extra, backends, device, monkeypatch
) -> None:
    monkeypatch.setenv("NEEDLE_PLUGIN_AUTOLOAD", "0")
    assert fresh_plugins.plugins() == {} and fresh_plugins.backends() == {}
    assert extra not in sys.modules
    with pytest.raises(ndl.DeviceUnavailableError, match="no needle backend is installed"):
        ndl.default_device()
    with pytest.raises(ndl.UnknownDeviceError, match="known devices: none"):
        ndl.device(device.name)
    fresh_plugins.reset()  # hand registration still works without autoload
    backends.register("byhand", backends.clone(device.mod, "byhand"))
    assert list(fresh_plugins.plugins()) == ["test-byhand"]
    assert ndl.default_device().name == "byhand"
    _works("byhand")


# ---------------------------------------------------------------------- backend contract


def test_contract_error_names_every_missing_function(device) -> None:
    from types import SimpleNamespace

    wanted = (*contract.REQUIRED, "__dtypes__")
    names = {n: getattr(device.mod, n) for n in wanted if hasattr(device.mod, n)}
    for n in ("ewise_add", "matmul", "reduce_max"):
        del names[n]
    names["fill"] = lambda out: None
    names["__device_name__"] = 3
    with pytest.raises(contract.ContractError) as err:
        contract.check_backend(SimpleNamespace(**names), "halfdone")
    message = str(err.value)
    for problem in (
        "'halfdone'",
        f"v{contract.CONTRACT_VERSION}",
        "missing ewise_add",
        "missing matmul",
        "missing reduce_max",
        "fill takes 1 positional arguments, the contract says 2",
        "__device_name__ is int",
    ):
        assert problem in message, f"{problem!r} not in: {message}"


def test_backend_missing_functions_fails_to_load(
    fresh_plugins, backends, device, monkeypatch
) -> None:
    missing = ("ewise_add", "matmul", "reduce_max")
    record = backends.register("halfdone", backends.clone(device.mod, "halfdone", drop=missing))
    with pytest.raises(ndl.DeviceUnavailableError) as err:
        ndl.device("halfdone")
    for name in missing:
        assert f"missing {name}" in str(err.value), str(err.value)
    assert (record.status, record.phase) == ("failed", "contract check")
    assert fresh_plugins.backend("halfdone").status == "failed"

    monkeypatch.setenv("NEEDLE_STRICT_PLUGINS", "1")
    fresh_plugins.reset()
    backends.register("halfdone", backends.clone(device.mod, "halfdone", drop=missing))
    with pytest.raises(PluginError, match="missing ewise_add.*missing matmul.*missing reduce_max"):
        ndl.device("halfdone")


def test_every_registered_backend_meets_the_contract(device) -> None:
    contract.check_backend(device.mod, device.name, device.version)
    assert set(device.capabilities) <= set(contract.OPTIONAL)


# ---------------------------------------------------------------------- unavailable backends


def test_unavailable_backend(fresh_plugins, backends, device) -> None:
    mod = backends.clone(device.mod, "ghost", unavailable_reason=lambda: "no GPU here (test)")
    backends.register("ghost", mod, priority=10**6)  # would win the default if it could run
    with pytest.raises(
        ndl.DeviceUnavailableError, match=r"'ghost' is unavailable: no GPU here \(test\)"
    ):
        ndl.device("ghost")
    assert fresh_plugins.backend("ghost").status == "unavailable"
    assert ndl.default_device().name != "ghost"
    assert "ghost" not in [d.name for d in ndl.all_devices()]
    assert fresh_plugins.plugins()["test-ghost"].status == "loaded", "unavailable is not a failure"


@pytest.mark.parametrize(
    "probe,status",
    [(lambda: None, "loaded"), (lambda: "", "loaded"), (lambda: 1 / 0, "unavailable")],
    ids=["None", "empty", "raises"],
)
def test_unavailable_reason_probe(fresh_plugins, backends, device, probe, status) -> None:
    backends.register("probed", backends.clone(device.mod, "probed", unavailable_reason=probe))
    record = fresh_plugins.load_backend("probed")
    assert record.status == status, record.reason
    if status == "unavailable":
        assert "availability check failed: ZeroDivisionError" in record.reason


def test_unknown_device_lists_the_known_ones(fresh_plugins, device) -> None:
    with pytest.raises(ndl.UnknownDeviceError) as err:
        ndl.device("nosuchdev")
    assert isinstance(err.value, ValueError)
    for name in fresh_plugins.backends():
        assert name in str(err.value), f"known device {name} not listed: {err.value}"


@pytest.mark.parametrize(
    "name,dist", [("cuda", "needle-cuda"), ("cpu", "needle-cpu"), ("numpy", "needle-numpy")]
)
def test_unknown_project_device_says_what_to_install(
    fresh_plugins, backends, device, monkeypatch, name, dist
) -> None:
    monkeypatch.setenv("NEEDLE_PLUGIN_AUTOLOAD", "0")  # so that none of ours is installed
    backends.register("other", backends.clone(device.mod, "other"))
    with pytest.raises(ndl.UnknownDeviceError) as err:
        ndl.device(name)
    assert "known devices: other" in str(err.value)
    folder = dist.replace("-", "_")
    assert f"pip install ./plugins/{folder}" in str(err.value), "no command that works from a clone"
    assert (REPO / "plugins" / folder / "pyproject.toml").is_file(), f"{folder} is no plugin folder"
    assert f"published on PyPI: pip install {dist}" in str(err.value)
    if name == "cuda":  # the course's helper returns a disabled device that says the same
        assert not ndl.cuda().enabled() and "./plugins/needle_cuda" in ndl.cuda().reason
        with pytest.raises(ndl.UnknownDeviceError, match="pip install needle-cuda"):
            ndl.Tensor([1.0], device=ndl.cuda())


# ---------------------------------------------------------------------- extensions and hooks


def test_extension_hooks_merge_and_refuse_duplicates(fresh_plugins) -> None:
    class Opt:
        pass

    class First:
        @hookimpl
        def needle_optimizers(self):
            return {"NeedleTestOpt": Opt, "NeedleTestOther": Opt}

    class Second:
        @hookimpl
        def needle_optimizers(self):
            return {"NeedleTestOpt": type("Opt", (), {})}

    fresh_plugins.register(First(), name="first")
    assert fresh_plugins.extensions("optimizers")["NeedleTestOpt"] is Opt
    second = fresh_plugins.register(Second(), name="second")
    assert second.status == "failed"
    assert re.search("'NeedleTestOpt'.*'first'.*'second'", second.cause), second.cause
    assert "NeedleTestOpt" not in fresh_plugins.extensions("optimizers")
    assert fresh_plugins.extensions("optimizers")["NeedleTestOther"] is Opt
    with pytest.raises(ValueError, match="unknown extension kind 'layers'"):
        fresh_plugins.extensions("layers")


EXTENSION_HOOKS = [  # (kind, hook, where it appears, a built-in that takes the same road)
    ("nn_modules", "needle_nn_modules", "needle.nn", "Linear"),
    ("optimizers", "needle_optimizers", "needle.optim", "SGD"),
    ("datasets", "needle_datasets", "needle.data", "MNISTDataset"),
    ("transforms", "needle_transforms", "needle.data", "RandomCrop"),
]


@pytest.mark.parametrize(
    "kind,hook,module,builtin", EXTENSION_HOOKS, ids=[h[1] for h in EXTENSION_HOOKS]
)
def test_extension_hook_adds_a_name_to_its_module(
    fresh_plugins, kind, hook, module, builtin
) -> None:
    namespace = importlib.import_module(module)
    assert getattr(namespace, builtin) is fresh_plugins.extensions(kind)[builtin], (
        f"built-in {builtin} does not come through {hook}"
    )
    thing = type("NeedleTestThing", (), {})
    plugin = type("Plugin", (), {hook: hookimpl(lambda self: {"NeedleTestThing": thing})})()
    fresh_plugins.register(plugin, name=f"test-{hook}")
    assert fresh_plugins.extensions(kind)["NeedleTestThing"] is thing
    assert namespace.NeedleTestThing is thing, f"{module}.NeedleTestThing"
    fresh_plugins.reset()
    with pytest.raises(AttributeError, match="NeedleTestThing"):
        namespace.NeedleTestThing


def test_extension_from_an_entry_point_plugin(fresh_plugins, fake_dist) -> None:
    source = (
        "from needle.plugins import hookimpl\n\n\n"
        "class Lion:\n    pass\n\n\n"
        "@hookimpl\ndef needle_optimizers():\n    return {'NeedleTestLion': Lion}\n"
    )
    fake_dist("needle-lion", {"lion": "needle_tests_lion"}, {"needle_tests_lion": source})
    assert ndl.optim.NeedleTestLion.__module__ == "needle_tests_lion"


def test_every_hookspec_is_documented_and_tested() -> None:
    specs = [n for n in hookspecs.__all__ if n.startswith("needle_")]
    for name in specs:
        fn = getattr(hookspecs, name)
        assert inspect.getdoc(fn), f"hookspec {name} has no docstring"
        assert hasattr(fn, "needle_spec"), f"{name} is listed but not marked @hookspec"
    # needle_communicators is tested in tests/distributed/test_communicator_plugins.py.
    tested = {"needle_backends", "needle_communicators", *(h[1] for h in EXTENSION_HOOKS)}
    assert set(specs) == tested, f"hooks without a test here: {set(specs) - tested}"


# ---------------------------------------------------------------------- two claims of one name


def _real_distribution(fresh_plugins, name: str) -> str:
    return fresh_plugins.plugins()[fresh_plugins.backend(name).plugin].distribution


@pytest.fixture
def impostor(fresh_plugins, fake_dist, backends, device):
    """An installed plugin ``aaa_dup`` (sorted first) that also declares the test device."""
    real = _real_distribution(fresh_plugins, device.name)
    kernels = backends.clone(device.mod, "impostor").__name__
    fake_dist(
        "needle-aaa-dup",
        {"aaa_dup": "needle_tests_aaa_dup"},
        {"needle_tests_aaa_dup": _plugin_source(device.name, kernels)},
    )
    fresh_plugins.reset()
    return real, kernels


def test_two_entry_points_claiming_one_backend_is_an_error_naming_both(
    fresh_plugins, impostor, device
) -> None:
    real, kernels = impostor
    with pytest.raises(ndl.DeviceUnavailableError) as err:
        ndl.device(device.name)
    message = str(err.value)
    for word in ("needle-aaa-dup", real, "aaa_dup", "NEEDLE_DISABLE_PLUGINS"):
        assert word in message, f"{word!r} not in: {message}"
    assert fresh_plugins.backend(device.name).status == "conflict"
    assert fresh_plugins.plugins()["aaa_dup"].status == "failed"
    assert kernels not in {d.mod.__name__ for d in ndl.all_devices()}, "the impostor was used"


def test_two_claims_of_one_backend_raise_in_strict_mode(
    fresh_plugins, impostor, device, monkeypatch
) -> None:
    real, _ = impostor
    monkeypatch.setenv("NEEDLE_STRICT_PLUGINS", "1")
    with pytest.raises(PluginError, match=f"(?=.*needle-aaa-dup)(?=.*{real})"):
        fresh_plugins.plugins()


@pytest.mark.parametrize("env", ["NEEDLE_DISABLE_PLUGINS", "NEEDLE_PLUGINS"])
def test_the_user_chooses_between_two_claims(fresh_plugins, impostor, device, monkeypatch, env):
    real, kernels = impostor
    if env == "NEEDLE_DISABLE_PLUGINS":
        monkeypatch.setenv(env, "aaa_dup")
    else:
        monkeypatch.setenv(env, real)
    fresh_plugins.reset()
    assert ndl.device(device.name).mod.__name__ != kernels
    _works(device.name)


def test_second_entry_point_with_a_taken_name_stays_visible(fresh_plugins, fake_dist) -> None:
    """Two distributions naming their entry point alike: both records are kept and shown."""
    fake_dist("needle-dup-a", {"dup": "needle_tests_dup_a"}, {"needle_tests_dup_a": ""})
    fake_dist("needle-dup-b", {"dup": "needle_tests_dup_b"}, {"needle_tests_dup_b": BROKEN_SOURCE})
    records = [
        r for r in fresh_plugins.plugins().values() if r.distribution.startswith("needle-dup")
    ]
    assert sorted((r.distribution, r.status) for r in records) == [
        ("needle-dup-a", "loaded"),
        ("needle-dup-b", "failed"),
    ], records
    assert len({r.name for r in records}) == 2, "two plugins share one record name"


# ---------------------------------------------------------------------- BackendSpec is checked


@pytest.mark.parametrize(
    "field, value",
    [
        ("name", None),
        ("name", ""),
        ("name", "my device"),
        ("module", 5),
        ("module", "not a module path"),
        ("contract_version", "1"),
        ("contract_version", True),
        ("contract_version", 0),
        ("priority", "high"),
        ("priority", float("nan")),
        ("priority", None),
        ("accelerator", "yes"),
        ("distribution", None),
    ],
)
def test_backend_spec_fields_are_checked(field, value) -> None:
    fields = {"name": "ok", "module": "ok.kernels", "contract_version": 1, field: value}
    with pytest.raises((TypeError, ValueError), match=f"BackendSpec.{field}"):
        BackendSpec(**fields)


def test_a_bad_spec_fails_its_plugin_only(fresh_plugins, device) -> None:
    class Bad:
        @hookimpl
        def needle_backends(self):
            return [BackendSpec(name="badprio", module="x.kernels", contract_version=1,
                                priority="high")]  # fmt: skip

    record = fresh_plugins.register(Bad(), name="bad", distribution="needle-bad")
    assert (record.status, record.phase) == ("failed", "needle_backends")
    assert "BackendSpec.priority" in record.cause
    assert "badprio" not in fresh_plugins.backends()
    _works(ndl.default_device().name)  # tensor creation still works


def test_unavailable_reason_raising_system_exit_stays_inside(fresh_plugins, backends, device):
    def probe():
        raise SystemExit(3)

    mod = backends.clone(device.mod, "exiting", unavailable_reason=probe)
    backends.register("exiting", mod, priority=10**6)  # it would be the default
    default = ndl.default_device()
    assert default.name != "exiting"
    record = fresh_plugins.backend("exiting")
    assert record.status == "unavailable" and "SystemExit" in record.reason, record.reason
    _works(default.name)


# ---------------------------------------------------------------------- hooks go through pluggy


def test_hooks_are_called_through_pluggy(fresh_plugins, backends, device) -> None:
    called = []
    fresh_plugins.get_manager().add_hookcall_monitoring(
        lambda name, impls, kwargs: called.append(name), lambda *args: None
    )
    backends.register("traced", backends.clone(device.mod, "traced"))
    assert "needle_backends" in called, called


def test_unmarked_needle_backends_is_refused(fresh_plugins) -> None:
    class Unmarked:
        def needle_backends(self):
            return [BackendSpec(name="unmarked", module="x.kernels", contract_version=1)]

    record = fresh_plugins.register(Unmarked(), name="unmarked")
    assert "unmarked" not in fresh_plugins.backends(), "an unmarked hook was called"
    assert record.status == "failed" and "@hookimpl" in record.cause, record.cause


def test_unmarked_extension_hook_is_reported(fresh_plugins) -> None:
    class Unmarked:
        def needle_nn_modules(self):
            return {"NeedleTestUnmarked": type("NeedleTestUnmarked", (), {})}

    record = fresh_plugins.register(Unmarked(), name="unmarked-nn")
    assert record.status == "failed" and "needle_nn_modules" in record.cause, record.cause
    assert "@hookimpl" in record.cause


def test_hook_with_an_unknown_name_is_reported(fresh_plugins) -> None:
    class Typo:
        @hookimpl
        def needle_backend(self):
            return []

    record = fresh_plugins.register(Typo(), name="typo")
    assert record.status == "failed" and "'needle_backend'" in record.cause, record.cause
    assert "needle_backends" in record.cause, "the message lists the hooks that exist"


def test_disabled_plugin_is_blocked_in_pluggy(fresh_plugins, extra, monkeypatch) -> None:
    monkeypatch.setenv("NEEDLE_DISABLE_PLUGINS", "extra")
    pm = fresh_plugins.get_manager()
    assert pm.is_blocked("extra")
    record = fresh_plugins.register(importlib.import_module(extra), name="extra")
    assert record.status == "blocked", record
    assert "extra" not in fresh_plugins.backends()
