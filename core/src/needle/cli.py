"""The ``needle`` command line: ``info``, ``doctor``, ``demo``, ``experiment``, ``checkpoint``.

``needle info`` lists plugins, distributions, versions, backends (with their dtypes) and
the communicators of ``needle.distributed`` with their status; ``needle doctor`` runs a
small smoke test per device against numpy; ``needle experiment`` trains a grid of
configurations and compares them; ``needle checkpoint show|diff`` inspects and compares
checkpoint files.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from collections.abc import Sequence
from typing import Any

import numpy as np

from . import __version__, contract
from .devices import INSTALL_HINT
from .plugins import manager

__all__ = ["main", "collect_info", "run_doctor"]


def collect_info() -> dict[str, Any]:
    """Everything ``needle info`` shows, as plain data (loads every backend's kernels)."""
    from . import devices

    backends = []
    for name, record in sorted(manager.backends().items()):
        if record.status == "registered":
            record = manager.load_backend(name)
        backends.append(
            {
                "name": name,
                "plugin": record.plugin,
                "distribution": record.spec.distribution,
                "module": record.spec.module,
                "status": record.status,
                "reason": record.reason,
                "accelerator": record.spec.accelerator,
                "capabilities": list(record.capabilities),
                "contract_version": record.spec.contract_version,
                "dtypes": {group: list(names) for group, names in record.dtypes.items()},
            }
        )
    plugins = [
        {
            "name": p.name,
            "distribution": p.distribution,
            "version": p.version,
            "entry_point": p.value,
            "status": p.status,
            "phase": p.phase,
            "cause": p.cause,
        }
        for p in sorted(manager.plugins().values(), key=lambda p: p.name)
    ]
    communicators = _collect_communicators()
    try:
        default = devices.default_device().name
        default_error = ""
    except devices.DeviceError as exc:
        default, default_error = None, str(exc)
    return {
        "needle_core": __version__,
        "contract_version": contract.CONTRACT_VERSION,
        "python": platform.python_version(),
        "numpy": np.__version__,
        "plugins": plugins,
        "backends": backends,
        "communicators": communicators,
        "default_device": default,
        "default_device_error": default_error,
    }


def _collect_communicators() -> list[dict[str, Any]]:
    """The communicators of needle.distributed, each probed (no MPI is initialized)."""
    rows = []
    for name, record in sorted(manager.communicators().items()):
        if record.status == "registered":
            record = manager.load_communicator(name)
        probe = getattr(record.module, "launched", None)
        try:
            launched = bool(probe()) if probe is not None else False
        except Exception:  # noqa: BLE001 - a broken probe is reported as not launched
            launched = False
        rows.append(
            {
                "name": name,
                "plugin": record.plugin,
                "distribution": record.spec.distribution,
                "module": record.spec.module,
                "status": record.status,
                "reason": record.reason,
                "launcher": record.spec.launcher,
                "launched": launched,
            }
        )
    return rows


def _print_info(info: dict[str, Any]) -> None:
    print(f"needle-core {info['needle_core']} (backend contract v{info['contract_version']}), "
          f"Python {info['python']}, numpy {info['numpy']}")  # fmt: skip
    print("\nplugins:")
    if not info["plugins"]:
        print("  (none found in entry-point group 'needle')")
    for p in info["plugins"]:
        dist = f"{p['distribution']} {p['version']}".strip() or "-"
        line = f"  {p['name']:<12} {dist:<24} {p['status']}"
        if p["cause"]:
            line += f" during {p['phase']}: {p['cause']}"
        print(line)
    print("\nbackends:")
    if not info["backends"]:
        print(f"  (none: {INSTALL_HINT})")
    for b in info["backends"]:
        line = f"  {b['name']:<12} {b['status']:<12} from {b['distribution'] or b['plugin']}"
        if b["reason"]:
            line += f": {b['reason']}"
        elif b["capabilities"]:
            line += f" (optional: {', '.join(b['capabilities'])})"
        print(line)
    print("\ncommunicators (needle.distributed):")
    for c in info["communicators"]:
        line = f"  {c['name']:<12} {c['status']:<12} from {c['distribution'] or c['plugin']}"
        if c["reason"]:
            line += f": {c['reason']}"
        elif c["launched"]:
            line += " (this process was started by its launcher)"
        elif c["launcher"]:
            line += f" (start jobs with {c['launcher']})"
        print(line)
    _print_dtypes([b for b in info["backends"] if b["status"] == "loaded"])
    default = info["default_device"] or f"none ({info['default_device_error']})"
    print(f"\ndefault device: {default}")


def _print_dtypes(backends: list[dict[str, Any]]) -> None:
    """One table per loaded backend: which dtypes each kernel group accepts."""
    for b in backends:
        print(f"\ndtypes of {b['name']} (contract v{b['contract_version']}):")
        names = list(contract.DTYPES)
        print("  " + f"{'group':<12}" + "".join(f"{n:>9}" for n in names))
        for group, have in b["dtypes"].items():
            marks = "".join(f"{'yes' if n in have else '-':>9}" for n in names)
            print(f"  {group:<12}{marks}")


def run_doctor() -> list[dict[str, Any]]:
    """Smoke-test every loadable backend against numpy: allocate, add, matmul, reduce, copy back."""
    from .backend_ndarray import NDArray
    from .devices import DeviceError, device

    rng = np.random.default_rng(0)
    a, b = (
        rng.standard_normal((64, 48)).astype(np.float32),
        rng.standard_normal((48, 32)).astype(np.float32),
    )
    checks = {
        "add": lambda x, y, _: ((x + x).numpy(), a + a),
        "matmul": lambda x, _, y: ((x @ y).numpy(), a @ b),
        "sum": lambda x, y, _: (x.sum(axis=1).numpy(), a.sum(axis=1)),
        "max": lambda x, y, _: (x.max(axis=0).numpy(), a.max(axis=0)),
        "strided copy": lambda x, y, _: (x[::-2, 3:9].numpy(), a[::-2, 3:9]),
    }
    results = []
    for name in sorted(manager.backends()):
        row: dict[str, Any] = {"device": name, "checks": {}}
        try:
            dev = device(name)
        except DeviceError as exc:
            row["status"], row["reason"] = "skipped", str(exc)
            results.append(row)
            continue
        start = time.perf_counter()
        try:
            x, y = NDArray(a, device=dev), NDArray(b, device=dev)
            for check, fn in checks.items():
                got, want = fn(x, None, y)
                err = float(np.max(np.abs(got - want))) if want.size else 0.0
                ok = got.shape == want.shape and err <= 1e-4 * max(1.0, float(np.abs(want).max()))
                row["checks"][check] = {"ok": ok, "max_error": err}
            row["status"] = "ok" if all(c["ok"] for c in row["checks"].values()) else "FAILED"
        except Exception as exc:  # noqa: BLE001 - report, never crash the doctor
            row["status"], row["reason"] = "FAILED", f"{type(exc).__name__}: {exc}"
        row["seconds"] = round(time.perf_counter() - start, 4)
        results.append(row)
    return results


def _print_doctor(results: list[dict[str, Any]], failed_plugins: list[Any]) -> None:
    for row in results:
        if row["status"] == "skipped":
            print(f"{row['device']:<10} skipped: {row['reason']}")
            continue
        checks = ", ".join(
            f"{k} ok" if v["ok"] else f"{k} FAILED (err {v['max_error']:.3g})"
            for k, v in row["checks"].items()
        )
        reason = f" {row['reason']}" if row.get("reason") else ""
        print(f"{row['device']:<10} {row['status']}{reason} [{checks}] in {row['seconds']:.3f}s")
    for p in failed_plugins:
        print(f"plugin {p.name} ({p.distribution or '-'}) failed during {p.phase}: {p.cause}")
    if not results:
        print(f"no backends installed: {INSTALL_HINT}")
    elif not any(row["status"] == "ok" for row in results):
        print("no device can run here: every backend above was skipped (`needle info` says why)")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="needle",
        description="needle's command line: plugins and backends (info), a smoke test per "
        "device (doctor), and a training demo on real digits (demo).",
    )
    parser.add_argument("--version", action="version", version=f"needle-core {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    info_p = sub.add_parser("info", help="plugins, backends with status, the default device")
    info_p.add_argument("--json", action="store_true", help="machine-readable output")
    info_p.add_argument(
        "--contract", action="store_true", help="print the backend contract (kernels, dtypes)"
    )
    doctor_p = sub.add_parser("doctor", help="smoke-test every device against numpy")
    doctor_p.add_argument("--json", action="store_true", help="machine-readable output")
    sub.add_parser("demo", help="train MLPResNet on real handwritten digits", add_help=False)
    sub.add_parser(
        "experiment", help="train a grid of configurations and compare them", add_help=False
    )
    sub.add_parser("checkpoint", help="show or diff checkpoint files", add_help=False)
    args, rest = parser.parse_known_args(argv)
    manager.set_strict(False)  # the command line reports broken plugins, it never raises them

    if args.command == "demo":
        from . import demo

        return demo.main(rest)
    if args.command == "experiment":
        from . import experiments

        return experiments.main(rest)
    if args.command == "checkpoint":
        from . import checkpoint_tools

        return checkpoint_tools.main(rest)
    if rest:
        parser.error(f"unrecognized arguments: {' '.join(rest)}")
    if args.command == "info" and args.contract:
        print(contract.describe())
        return 0
    if args.command == "info":
        info = collect_info()
        if args.json:
            print(json.dumps(info, indent=2))
        else:
            _print_info(info)
        return 0
    results = run_doctor()
    failed_plugins = [p for p in manager.plugins().values() if p.status == "failed"]
    if args.json:
        print(
            json.dumps(
                {"devices": results, "failed_plugins": [vars(p) for p in failed_plugins]}, indent=2
            )
        )
    else:
        _print_doctor(results, failed_plugins)
    runnable = any(r["status"] == "ok" for r in results)
    bad = any(r["status"] == "FAILED" for r in results) or failed_plugins or not runnable
    return 1 if bad else 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
