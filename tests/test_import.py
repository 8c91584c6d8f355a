"""``import needle`` is cheap and quiet: no backend, no native library, no entry-point scan."""

from __future__ import annotations

import inspect
import json
import subprocess
import sys

import needle


def needle_libraries(mapped: list[str], package_dirs: list[str]) -> list[str]:
    """The mapped shared libraries (paths from /proc/self/maps) inside needle's packages.

    A path merely containing ``/needle`` is not enough: a clone in a folder named
    ``needle`` has its nox virtualenvs, and numpy's libraries, below that folder.
    """
    roots = tuple(d.rstrip("/") + "/" for d in package_dirs)
    return sorted({p for p in mapped if p.endswith(".so") and p.startswith(roots)})


PROBE = (
    inspect.getsource(needle_libraries)
    + r"""
import importlib.metadata as md
import json
import os
import pkgutil
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
            paths = [line.split()[-1] for line in maps if "/" in line]
        packages = [
            os.path.join(m.module_finder.path, m.name)
            for m in pkgutil.iter_modules()
            if m.name.startswith("needle") and hasattr(m.module_finder, "path")
        ]
        mapped = needle_libraries(paths, packages)
    return {"plugin_modules": plugin_modules, "native": native, "mapped": mapped,
            "scans": list(scans)}  # fmt: skip


import needle  # noqa: E402

after_import = state()
needle.default_device()
needle.default_device()
print(json.dumps({"import": after_import, "use": state()}))
"""
)

SITE = "/home/u/needle/.nox/tests-cpu/lib/python3.11/site-packages"


def test_native_library_check_names_needle_packages_only() -> None:
    """A clone in a folder named ``needle`` puts every library of its nox virtualenvs under
    ``.../needle/...``: only libraries inside needle's own packages count."""
    numpy_lib = f"{SITE}/numpy/_core/_multiarray_umath.cpython-311-x86_64-linux-gnu.so"
    cpu_ext = f"{SITE}/needle_cpu/_ext.cpython-311-x86_64-linux-gnu.so"
    packages = [f"{SITE}/needle", f"{SITE}/needle_cpu", f"{SITE}/needle_numpy"]
    assert needle_libraries([numpy_lib, "/usr/lib/libc.so.6"], packages) == []
    assert needle_libraries([numpy_lib, cpu_ext], packages) == [cpu_ext]
    assert needle_libraries([f"{SITE}/needle_cpu_extra/x.so"], packages) == []


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


def test_dir_needle_lists_the_api_not_its_imports() -> None:
    names = dir(needle)
    for helper in ("annotations", "importlib", "Any"):
        assert helper not in names, f"dir(needle) shows {helper}"
    for name in ("Tensor", "nn", "optim", "save", "load", "device", "relu", "__version__"):
        assert name in names
