"""Checkpoints: data-only files for state dicts (``needle.save`` / ``needle.load``).

The format is a numpy ``.npz`` archive read with ``allow_pickle=False``, so
loading never executes code. Entries are named ``a0``, ``a1``, ...; one more
entry, :data:`FORMAT_KEY`, holds a JSON index (format name, version, and for
each dotted key its entry and kind). Nested dicts are flattened with ``/``.
Writes are atomic: a temporary file in the target's directory, fsync'd, then
``os.replace``d over the target, so a crash never leaves a half-written file.
"""

from __future__ import annotations

import json
import os
import tempfile
import zipfile
from collections.abc import Mapping
from typing import Any

import numpy as np

from .autograd import Tensor
from .backend_ndarray import NDArray
from .devices import BackendDevice, default_device
from .devices import device as _lookup_device

__all__ = [
    "CheckpointError",
    "FORMAT_KEY",
    "FORMAT_NAME",
    "FORMAT_VERSION",
    "save",
    "load",
    "read_raw",
]

FORMAT_KEY = "__needle_checkpoint__"
FORMAT_NAME = "needle-checkpoint"
FORMAT_VERSION = 1
_SEP = "/"


class CheckpointError(ValueError):
    """A file is not a needle checkpoint, or a state does not fit what it is loaded into."""


def _flatten(obj: Mapping[str, Any], prefix: str, out: dict[str, Any]) -> None:
    for key, value in obj.items():
        if not isinstance(key, str):
            raise TypeError(f"checkpoint keys must be strings, got {key!r} under {prefix!r}")
        if _SEP in key or key == FORMAT_KEY:
            raise ValueError(f"checkpoint key {key!r} may not contain {_SEP!r} or be {FORMAT_KEY}")
        full = f"{prefix}{_SEP}{key}" if prefix else key
        if isinstance(value, Mapping):
            if not value:
                out[full] = ("dict", None)
            else:
                _flatten(value, full, out)
        else:
            out[full] = _encode(value, full)


def _encode(value: Any, key: str) -> tuple[str, np.ndarray | None]:
    """``(kind, array)`` for one leaf value."""
    if isinstance(value, Tensor):
        return "tensor", value.numpy()
    if isinstance(value, NDArray):
        return "ndarray", value.numpy()
    if isinstance(value, np.ndarray):
        if value.dtype.hasobject:
            raise TypeError(f"checkpoint value {key!r} is an object array (not data-only)")
        return "numpy", value
    if isinstance(value, (bool, np.bool_)):
        return "bool", np.asarray(bool(value))
    if isinstance(value, (int, np.integer)):
        return "int", np.asarray(int(value), dtype=np.int64)
    if isinstance(value, (float, np.floating)):
        return "float", np.asarray(float(value), dtype=np.float64)
    if isinstance(value, str):
        return "str", np.asarray(value)
    if value is None:
        return "none", None
    raise TypeError(
        f"checkpoint value {key!r} is a {type(value).__name__}; save Tensors, NDArrays, numpy "
        "arrays, numbers, strings, None or dicts of them"
    )


def save(obj: Mapping[str, Any], path: str | os.PathLike) -> None:
    """Write a state (``{name: Tensor | NDArray | ndarray | number | str | dict}``) to ``path``.

    The write is atomic: ``path`` holds either the old file or the complete new one.

    Args:
        obj: a state dict, e.g. ``model.state_dict()``, or a dict of such dicts
            (``{"model": ..., "optim": ...}``).
        path: the file to write (no suffix is added).
    """
    if not isinstance(obj, Mapping):
        raise TypeError(f"needle.save takes a dict of state, got {type(obj).__name__}")
    flat: dict[str, tuple[str, np.ndarray | None]] = {}
    _flatten(obj, "", flat)
    arrays: dict[str, np.ndarray] = {}
    index: dict[str, dict[str, str]] = {}
    for i, (key, (kind, array)) in enumerate(flat.items()):
        entry = {"kind": kind}
        if array is not None:
            entry["entry"] = f"a{i}"
            arrays[f"a{i}"] = np.asarray(array, order="C")  # keeps 0-d arrays 0-d
        index[key] = entry
    header = {"format": FORMAT_NAME, "version": FORMAT_VERSION, "keys": index}
    arrays[FORMAT_KEY] = np.asarray(json.dumps(header))

    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=".needle-", suffix=".tmp", dir=directory)
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez(f, **arrays)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    try:  # make the rename itself durable where the platform allows it
        dir_fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(dir_fd)
    except OSError:
        pass
    finally:
        os.close(dir_fd)


def _read_header(archive: Any, path: str) -> dict[str, Any]:
    if FORMAT_KEY not in archive.files:
        raise CheckpointError(f"{path} is not a needle checkpoint: it has no {FORMAT_KEY!r} entry")
    try:
        header = json.loads(str(archive[FORMAT_KEY]))
    except (ValueError, TypeError) as exc:
        raise CheckpointError(f"{path}: unreadable {FORMAT_KEY!r} entry ({exc})") from exc
    if not isinstance(header, dict) or header.get("format") != FORMAT_NAME:
        raise CheckpointError(f"{path} is not a needle checkpoint (format {header!r})")
    if header.get("version") != FORMAT_VERSION:
        raise CheckpointError(
            f"{path} is needle checkpoint version {header.get('version')}, this needle reads "
            f"version {FORMAT_VERSION}"
        )
    return header


def load(path: str | os.PathLike, device: BackendDevice | str | None = None) -> dict[str, Any]:
    """Read a checkpoint written by :func:`save`.

    Tensors come back as Tensors (``requires_grad=False``) on ``device``, the
    default device when None; NDArrays likewise; numpy arrays and scalars as
    themselves. Nested dicts are rebuilt. Nothing in the file is executed.

    Raises:
        CheckpointError: the file is not a needle checkpoint (not an npz, no format
            marker, another version, a missing entry).
    """
    path = os.fspath(path)
    dev = None
    try:
        archive = np.load(path, allow_pickle=False)
    except (ValueError, OSError, zipfile.BadZipFile, EOFError) as exc:
        if isinstance(exc, FileNotFoundError):
            raise
        raise CheckpointError(f"{path} is not a needle checkpoint ({exc})") from exc
    if not hasattr(archive, "files"):
        raise CheckpointError(f"{path} is not a needle checkpoint (a bare .npy array)")
    with archive:
        header = _read_header(archive, path)
        out: dict[str, Any] = {}
        for key, entry in header["keys"].items():
            kind = entry.get("kind")
            name = entry.get("entry")
            if name is not None and name not in archive.files:
                raise CheckpointError(f"{path}: entry {name!r} of key {key!r} is missing")
            try:
                array = archive[name] if name is not None else None
            except ValueError as exc:  # object arrays refuse to load without pickle
                raise CheckpointError(f"{path}: key {key!r} is not plain data ({exc})") from exc
            if kind in ("tensor", "ndarray"):
                dev = dev or _device(device)
                nd = NDArray.from_numpy(array.astype(np.float32, copy=False), dev)
                value: Any = Tensor(nd, requires_grad=False) if kind == "tensor" else nd
            elif kind == "numpy":
                value = array
            elif kind == "bool":
                value = bool(array)
            elif kind == "int":
                value = int(array)
            elif kind == "float":
                value = float(array)
            elif kind == "str":
                value = str(array)
            elif kind in ("none", "dict"):
                value = None if kind == "none" else {}
            else:
                raise CheckpointError(f"{path}: key {key!r} has unknown kind {kind!r}")
            _insert(out, key.split(_SEP), value)
    return out


def _device(device: BackendDevice | str | None) -> BackendDevice:
    if device is None:
        return default_device()
    return _lookup_device(device) if isinstance(device, str) else device


def _insert(out: dict[str, Any], parts: list[str], value: Any) -> None:
    for part in parts[:-1]:
        out = out.setdefault(part, {})
    out[parts[-1]] = value


def as_tensor(value: Any, device: BackendDevice, key: str) -> Tensor:
    """A new Tensor on ``device`` holding a bit-exact copy of ``value``, in its dtype.

    ``value`` is a Tensor, NDArray or numeric numpy array. The copy goes through
    the host, so it never aliases the source's buffer and keeps every bit
    (``-0.0``, NaN payloads, subnormals).

    Raises:
        CheckpointError: ``value`` is not array data; the message names ``key``.
    """
    if isinstance(value, Tensor):
        value = value.realize_cached_data()
    if isinstance(value, NDArray):
        value = value.numpy()
    if isinstance(value, np.ndarray) and value.dtype.kind in "fiub":
        return Tensor.make_const(NDArray.from_numpy(value, device))
    raise CheckpointError(f"state key {key!r} holds a {type(value).__name__}, not array data")


def read_raw(path: str | os.PathLike) -> tuple[dict[str, Any], dict[str, tuple[str, Any]]]:
    """A checkpoint as stored, for inspection: its header and ``{key: (kind, array)}``.

    Arrays come back as the numpy arrays in the file (their stored dtype, nothing moved to a
    device); ``kind`` is the saved value's kind (``"tensor"``, ``"ndarray"``, ``"numpy"``,
    ``"int"``, ``"float"``, ``"bool"``, ``"str"``, ``"none"``, ``"dict"``), and the array is
    None for ``"none"`` and ``"dict"``. Keys are the flattened ``a/b`` paths.

    Raises:
        CheckpointError: the file is not a needle checkpoint or an entry is missing.
    """
    path = os.fspath(path)
    try:
        archive = np.load(path, allow_pickle=False)
    except (ValueError, OSError, zipfile.BadZipFile, EOFError) as exc:
        if isinstance(exc, FileNotFoundError):
            raise
        raise CheckpointError(f"{path} is not a needle checkpoint ({exc})") from exc
    if not hasattr(archive, "files"):
        raise CheckpointError(f"{path} is not a needle checkpoint (a bare .npy array)")
    with archive:
        header = _read_header(archive, path)
        keys = header.get("keys")
        if not isinstance(keys, dict) or not all(isinstance(e, dict) for e in keys.values()):
            raise CheckpointError(f"{path}: its index of keys is malformed")
        entries: dict[str, tuple[str, Any]] = {}
        for key, entry in keys.items():
            name = entry.get("entry")
            if name is not None and name not in archive.files:
                raise CheckpointError(f"{path}: entry {name!r} of key {key!r} is missing")
            try:
                entries[key] = (str(entry.get("kind")), archive[name] if name else None)
            except (ValueError, OSError, zipfile.BadZipFile, EOFError) as exc:
                raise CheckpointError(f"{path}: key {key!r} is unreadable ({exc})") from exc
    return header, entries
