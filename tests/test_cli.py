"""The ``needle`` command line (``info``, ``doctor``) and ``python -m needle``, in subprocesses."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import needle as ndl
import pytest

TINY_SRC = Path(__file__).parent / "third_party" / "tiny_backend" / "src"

# An installed-looking plugin whose backend 'ghost' is installed but cannot run here.
GHOST_KERNELS = """\
from tiny_backend.kernels import *  # noqa: F403

__device_name__ = "ghost"


def unavailable_reason():
    return "no ghost hardware here (test)"
"""
GHOST_PLUGIN = """\
from needle.plugins import BackendSpec, hookimpl


@hookimpl
def needle_backends():
    return [BackendSpec(name="ghost", module="needle_tests_ghost_kernels", contract_version=1,
                        distribution="needle-ghost")]
"""


def _needle_script() -> str:
    for folder in (sysconfig.get_path("scripts"), str(Path(sys.executable).parent)):
        script = Path(folder) / "needle"
        if script.exists():
            return str(script)
    found = shutil.which("needle")
    assert found, "the `needle` console script of needle-core is not installed"
    return found


def needle(*args: str, env=None, module: bool = False) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "needle"] if module else [_needle_script()]
    return subprocess.run(
        [*cmd, *args], capture_output=True, text=True, timeout=300, env=env, check=False
    )


@pytest.fixture
def env(fresh_plugins, subprocess_env):
    """The subprocess environment: NEEDLE_* variables cleared, like the in-process manager."""
    return subprocess_env()


@pytest.fixture
def troubled(fake_dist, subprocess_env, fresh_plugins):
    """An environment with a plugin that fails to import and a backend that is unavailable."""
    fake_dist(
        "needle-broken",
        {"broken": "needle_tests_broken"},
        {"needle_tests_broken": "import needle_tests_libfoo\n"},
    )
    site = fake_dist(
        "needle-ghost",
        {"ghost": "needle_tests_ghost_plugin"},
        {"needle_tests_ghost_plugin": GHOST_PLUGIN, "needle_tests_ghost_kernels": GHOST_KERNELS},
    )
    return subprocess_env(site, TINY_SRC)


# ---------------------------------------------------------------------- info


@pytest.mark.parametrize("module", [False, True], ids=["needle", "python -m needle"])
def test_info(device, env, module) -> None:
    proc = needle("info", env=env, module=module)
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert f"needle-core {ndl.__version__}" in out
    assert "plugins:" in out and "backends:" in out
    assert any(line.split()[:2] == [device.name, "loaded"] for line in out.splitlines()), out
    assert f"default device: {ndl.default_device().name}" in out
    assert proc.stderr == ""


def test_info_json(fresh_plugins, device, env) -> None:
    proc = needle("info", "--json", env=env)
    assert proc.returncode == 0, proc.stderr
    info = json.loads(proc.stdout)
    backends = {b["name"]: b for b in info["backends"]}
    assert set(backends) == set(fresh_plugins.backends()), "info lists every declared backend"
    mine = backends[device.name]
    assert mine["status"] == "loaded" and mine["reason"] == ""
    assert mine["capabilities"] == list(device.capabilities)
    plugin = {p["name"]: p for p in info["plugins"]}[mine["plugin"]]
    assert plugin["status"] == "loaded" and plugin["version"]
    assert info["default_device"] == ndl.default_device().name
    assert info["needle_core"] == ndl.__version__
    assert info["contract_version"] == ndl.contract.CONTRACT_VERSION
    assert mine["contract_version"] == device.version
    assert {g: set(d) for g, d in mine["dtypes"].items()} == {
        g: set(d) for g, d in device.dtypes.items()
    }, "info shows the dtypes the backend declares per kernel group"


def test_info_prints_each_backends_dtype_table(device, env) -> None:
    out = needle("info", env=env).stdout
    table = out.split(f"dtypes of {device.name} (contract v{device.version}):")[1]
    memory = next(line for line in table.splitlines() if line.strip().startswith("memory"))
    assert memory.split()[1] == "yes", "float32 memory is always there"
    assert memory.split()[1:].count("yes") == len(device.dtypes["memory"])


def test_info_contract_prints_the_declared_contract(env) -> None:
    out = needle("info", "--contract", env=env).stdout
    assert f"needle backend contract v{ndl.contract.CONTRACT_VERSION}" in out
    for kernel in ndl.contract.KERNELS:
        assert f"`{kernel.signature()}`" in out, kernel.name


def test_contract_names_each_parameter_once() -> None:
    """Every kernel's parameters have distinct names under every contract version (v1's
    conv2d took ``w`` for the weights and for the width)."""
    for kernel in ndl.contract.KERNELS:
        for version in ndl.contract.SUPPORTED_VERSIONS:
            params = kernel.params_for(version)
            repeated = sorted({p for p in params if params.count(p) > 1})
            assert not repeated, f"{kernel.signature(version)} repeats {repeated}"


def test_info_shows_failed_unavailable_and_blocked_plugins(device, troubled) -> None:
    proc = needle("info", env=troubled)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    broken = next(line for line in lines if line.split()[:1] == ["broken"])
    assert "needle-broken 0.1" in broken and "failed during import" in broken, broken
    assert "ModuleNotFoundError" in broken and "needle_tests_libfoo" in broken, broken
    ghost = next(line for line in lines if line.split()[:2] == ["ghost", "unavailable"])
    assert "no ghost hardware here (test)" in ghost
    assert any(line.split()[:2] == [device.name, "loaded"] for line in lines), proc.stdout

    info = json.loads(needle("info", "--json", env=troubled).stdout)
    plugins = {p["name"]: p for p in info["plugins"]}
    assert (plugins["broken"]["status"], plugins["broken"]["phase"]) == ("failed", "import")
    assert "needle_tests_libfoo" in plugins["broken"]["cause"]
    assert info["default_device"] not in (None, "ghost")

    troubled["NEEDLE_DISABLE_PLUGINS"] = "broken"
    blocked = needle("info", env=troubled).stdout.splitlines()
    line = next(line for line in blocked if line.split()[:1] == ["broken"])
    assert "blocked" in line and "NEEDLE_DISABLE_PLUGINS" in line, line


# ---------------------------------------------------------------------- doctor


def test_doctor(device, env) -> None:
    proc = needle("doctor", env=env)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    line = next(line for line in proc.stdout.splitlines() if line.split()[:1] == [device.name])
    assert line.split()[1] == "ok" and "FAILED" not in line, line

    result = json.loads(needle("doctor", "--json", env=env).stdout)
    for row in result["devices"]:  # every device is ok, or unavailable here and skipped
        assert row["status"] in ("ok", "skipped"), row
    row = {r["device"]: r for r in result["devices"]}[device.name]
    assert row["status"] == "ok" and row["checks"], row
    assert all(check["ok"] for check in row["checks"].values()), row
    assert result["failed_plugins"] == []


def test_doctor_with_a_broken_plugin_checks_the_others_and_fails(device, troubled) -> None:
    proc = needle("doctor", env=troubled)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    out = proc.stdout
    line = next(line for line in out.splitlines() if line.split()[:1] == [device.name])
    assert line.split()[1] == "ok", line
    assert "ghost" in out and "skipped" in out and "no ghost hardware here" in out
    assert "plugin broken (needle-broken) failed during import" in out, out


def test_doctor_passes_with_only_an_unavailable_backend_in_trouble(device, troubled) -> None:
    troubled["NEEDLE_DISABLE_PLUGINS"] = "broken"
    proc = needle("doctor", env=troubled)
    assert proc.returncode == 0, proc.stdout + proc.stderr  # unavailable is not a failure


def test_bad_usage_exits_2(env) -> None:
    assert needle(env=env).returncode == 2
    proc = needle("info", "--bogus", env=env)
    assert proc.returncode == 2 and "--bogus" in proc.stderr


FUTURE_PLUGIN = """\
from needle.plugins import BackendSpec, hookimpl


@hookimpl
def needle_backends():
    return [BackendSpec(name="future", module="needle_tests_future_kernels", contract_version=99,
                        distribution="needle-future")]
"""


@pytest.mark.parametrize("only", ["ghost", "future"], ids=["unavailable", "contract-skipped"])
def test_doctor_fails_when_no_device_can_run(troubled, fake_dist, only) -> None:
    """Only a backend that cannot run here (no hardware, another contract): exit 1."""
    fake_dist(
        "needle-future", {"future": "needle_tests_future"}, {"needle_tests_future": FUTURE_PLUGIN}
    )
    troubled["NEEDLE_PLUGINS"] = only
    proc = needle("doctor", env=troubled)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "no device can run here" in proc.stdout, proc.stdout
    assert only in proc.stdout


def test_conformance_suite_fails_when_no_backend_can_run(troubled) -> None:
    """Without --backend, a run where every backend is unavailable must not pass by skipping."""
    troubled["NEEDLE_PLUGINS"] = "ghost"
    troubled.pop("NEEDLE_TEST_BACKENDS", None)
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "--pyargs", "needle.testing.conformance", "-q",
         "-p", "no:cacheprovider"],
        capture_output=True, text=True, timeout=600, env=troubled, check=False,
    )  # fmt: skip
    assert proc.returncode != 0, proc.stdout[-2000:]
    assert "no needle backend can run here" in proc.stdout, proc.stdout[-2000:]
    assert "ghost" in proc.stdout


def test_version(env) -> None:
    proc = needle("--version", env=env)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == f"needle-core {ndl.__version__}"


def test_help_is_plain_text(env) -> None:
    proc = needle("--help", env=env)
    assert proc.returncode == 0, proc.stderr
    for markup in ("``", ":func:", ":mod:", ":class:"):
        assert markup not in proc.stdout, proc.stdout
    for command in ("info", "doctor", "demo"):
        assert command in proc.stdout
