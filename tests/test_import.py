"""``import needle`` is cheap and quiet: no backend, no native library, no entry-point scan."""

from __future__ import annotations

import json
import subprocess
import sys

import needle

PROBE = r"""
import importlib.metadata as md
import json
import os
import sys

scans = []
_entry_points = md.entry_points


def spy(*args, **kwargs):
    scans.append(kwargs.get("group", args[0] if args else None))
    return _entry_points(*args, **kwargs)


md.entry_points = spy


def state():
    plugin_modules = sorted(m for m in sys.modules if m.split(".")[0].startswith("needle_"))
    native = sorted(
        getattr(m, "__file__", None) or ""
        for name, m in list(sys.modules.items())
        if name.split(".")[0].startswith("needle")
        and (getattr(m, "__file__", None) or "").endswith((".so", ".pyd", ".dylib"))
    )
    mapped = []
    if os.path.exists("/proc/self/maps"):
        with open("/proc/self/maps") as maps:
            mapped = sorted({
                line.split()[-1] for line in maps
                if "/needle" in line and line.rstrip().endswith(".so")
            })  # fmt: skip
    return {"plugin_modules": plugin_modules, "native": native, "mapped": mapped,
            "scans": list(scans)}  # fmt: skip


import needle  # noqa: E402

after_import = state()
needle.default_device()
needle.default_device()
print(json.dumps({"import": after_import, "use": state()}))
"""


def _run(code: str, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, **kwargs
    )


def test_import_needle_loads_no_backend_and_scans_no_entry_points() -> None:
    proc = _run(PROBE)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    at_import = result["import"]
    assert at_import["plugin_modules"] == [], f"import needle imported {at_import}"
    assert at_import["native"] == [], f"import needle loaded {at_import['native']}"
    assert at_import["mapped"] == [], f"import needle mapped {at_import['mapped']}"
    assert at_import["scans"] == [], "import needle scanned entry points"
    # the probe sees the scan and the backend once a device is used
    assert result["use"]["scans"] == ["needle"], "entry points must be scanned exactly once"
    assert result["use"]["plugin_modules"], "the default device's backend was never imported"


def test_import_needle_prints_nothing() -> None:
    proc = _run("import needle; import needle.backend_ndarray; import needle.ops")
    assert proc.returncode == 0, proc.stderr
    assert (proc.stdout, proc.stderr) == ("", ""), "import needle printed something"


def test_first_device_use_prints_nothing() -> None:
    proc = _run("import needle; t = needle.Tensor([1.0]); (t + t).numpy()")
    assert proc.returncode == 0, proc.stderr
    assert (proc.stdout, proc.stderr) == ("", ""), "choosing the default device printed something"


def test_import_needle_survives_a_broken_plugin_even_in_strict_mode(
    fake_dist, subprocess_env
) -> None:
    site = fake_dist(
        "needle-broken", {"broken": "needle_tests_broken"}, {"needle_tests_broken": "1/0"}
    )
    env = subprocess_env(site, NEEDLE_STRICT_PLUGINS="1")
    proc = _run("import needle; print(needle.__version__)", env=env)
    assert proc.returncode == 0 and proc.stdout.strip() == needle.__version__, proc.stderr
    proc = _run("import needle; needle.default_device()", env=env)  # the scan raises, loudly
    assert proc.returncode != 0
    assert "PluginError" in proc.stderr and "ZeroDivisionError" in proc.stderr, proc.stderr
