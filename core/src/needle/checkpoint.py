"""Checkpoints: data-only files for state dicts (``needle.save`` / ``needle.load``).

The format is a zip archive of ``.npy`` entries (what ``numpy.savez`` writes), read
entry by entry with no pickle, so loading never executes code. Entries are named ``a0``,
``a1``, ...; one more entry, :data:`FORMAT_KEY`, holds a JSON index (format name,
version, and for each ``/``-joined key of the nested state its kind and entry). Reading
trusts nothing in the file: the index is checked against this schema, each entry's
declared shape against the bytes it holds, the total against the file's own size, and
every problem raises :class:`CheckpointError` naming the file and the entry.

Writes are atomic: a temporary file beside the target (``.<name>.needle-<host>.<pid>.<n>.tmp``),
fsync'd, then renamed over the target, so a crash never leaves a half-written file; a
save removes the temporary files that killed saves of the same target left. The file
gets the mode a new file gets under the umask, or keeps the mode of the file it
replaces; a symlink is written through, never replaced.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
import secrets
import socket
import stat
import zipfile
import zlib
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
_DATA_KINDS = ("tensor", "ndarray", "numpy", "bool", "int", "float", "str")
_EMPTY_KINDS = ("none", "dict")
_ZIP_MAGIC = (b"PK\x03\x04", b"PK\x05\x06")  # a first entry, or an empty archive
_TMP_SUFFIX = ".tmp"
# What zipfile and numpy's .npy reader raise on damaged bytes (an unsupported zip version
# or compression, an encrypted entry, a bad CRC, a header that does not parse, ...).
_READ_ERRORS = (
    zipfile.BadZipFile, zlib.error, OSError, EOFError, ValueError, SyntaxError,
    NotImplementedError, RuntimeError, RecursionError, MemoryError,
)  # fmt: skip


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

    # Write through a symlink (to the file it points at) instead of replacing the link.
    target = os.path.realpath(os.fspath(path))
    directory, name = os.path.split(target)
    prefix = _tmp_prefix(name)
    _remove_dead_temporaries(directory, prefix)
    fd, tmp = _create_temporary(directory, prefix, target)
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez(f, **arrays)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, target)
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


def _host() -> str:
    return re.sub(r"[^A-Za-z0-9-]", "-", socket.gethostname())[:32] or "host"


def _tmp_prefix(name: str) -> str:
    """``.<name>.needle-<host>.``: temporaries of one target on one host share it."""
    if len(name.encode()) > 120:  # keep the temporary's name within the 255-byte limit
        name = hashlib.sha256(name.encode()).hexdigest()[:32]
    return f".{name}.needle-{_host()}."


def _create_temporary(directory: str, prefix: str, target: str) -> tuple[int, str]:
    """A new file ``<prefix><pid>.<token>.tmp`` in ``directory``, open for writing.

    It is created with mode 0666 less the umask, like any new file, or with the mode of
    the file it will replace.
    """
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0)
    for _ in range(100):
        tmp = os.path.join(directory, f"{prefix}{os.getpid()}.{secrets.token_hex(4)}{_TMP_SUFFIX}")
        try:
            fd = os.open(tmp, flags, 0o666)
        except FileExistsError:
            continue
        break
    else:  # pragma: no cover - 100 random names taken
        raise FileExistsError(f"cannot create a temporary file beside {target}")
    try:
        mode = stat.S_IMODE(os.stat(target).st_mode)
    except OSError:
        return fd, tmp
    if hasattr(os, "fchmod"):
        try:
            os.fchmod(fd, mode)
        except OSError:
            pass
    return fd, tmp


def _remove_dead_temporaries(directory: str, prefix: str) -> None:
    """Delete the temporaries of saves of this target, on this host, whose process is gone."""
    if os.name != "posix":  # os.kill(pid, 0) is not a liveness test elsewhere
        return
    try:
        entries = os.listdir(directory)
    except OSError:
        return
    for entry in entries:
        if not (entry.startswith(prefix) and entry.endswith(_TMP_SUFFIX)):
            continue
        pid = entry[len(prefix) :].split(".", 1)[0]
        if not pid.isdigit() or _alive(int(pid)):
            continue
        try:
            os.unlink(os.path.join(directory, entry))
        except OSError:
            pass


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError, ValueError):
        return True
    return True


class _Archive:
    """A checkpoint's zip archive, read one ``.npy`` entry at a time, every size checked.

    The entries read may expand to at most the file's own size in all: the format
    stores them uncompressed, so a larger claim is a lie (or a zip bomb).
    """

    def __init__(self, path: str) -> None:
        self.path = path
        with open(path, "rb") as f:  # FileNotFoundError and friends pass through
            magic = f.read(4)
            self.budget = os.fstat(f.fileno()).st_size
        if magic not in _ZIP_MAGIC:
            raise CheckpointError(f"{path} is not a needle checkpoint (not a zip archive)")
        try:
            self.zip = zipfile.ZipFile(path)
        except _READ_ERRORS as exc:
            raise CheckpointError(
                f"{path} is not a needle checkpoint ({type(exc).__name__}: {exc})"
            ) from exc

    def __enter__(self) -> _Archive:
        return self

    def __exit__(self, *exc: object) -> None:
        self.zip.close()

    def read(self, entry: str, key: str | None) -> np.ndarray:
        """Entry ``entry`` (for ``key``, named in errors) as a read-only array."""
        where = f"{self.path}: entry {entry!r}" + (f" of key {key!r}" if key else "")
        try:
            info = self.zip.getinfo(f"{entry}.npy")
        except KeyError:
            raise CheckpointError(f"{where} is missing") from None
        if info.file_size > self.budget:
            raise CheckpointError(
                f"{where} expands to {info.file_size:,} bytes, more than the file holds "
                "(checkpoints are stored uncompressed)"
            )
        self.budget -= info.file_size
        try:
            with self.zip.open(info) as f:
                version = np.lib.format.read_magic(f)
                if version == (1, 0):
                    shape, fortran, dtype = np.lib.format.read_array_header_1_0(f)
                elif version == (2, 0):
                    shape, fortran, dtype = np.lib.format.read_array_header_2_0(f)
                else:
                    raise CheckpointError(f"{where} is .npy version {version}, expected 1.0")
                if dtype.hasobject:
                    raise CheckpointError(f"{where} holds Python objects, which needle never loads")
                count = math.prod(shape)
                nbytes = count * dtype.itemsize
                held = info.file_size - f.tell()
                if nbytes != held:
                    raise CheckpointError(
                        f"{where} declares shape {shape} of {dtype} ({nbytes:,} bytes) but "
                        f"holds {held:,} bytes"
                    )
                raw = f.read(nbytes)
                f.read(1)  # reach the end: zipfile checks the CRC there
        except CheckpointError:
            raise
        except _READ_ERRORS as exc:
            raise CheckpointError(f"{where} is unreadable ({type(exc).__name__}: {exc})") from exc
        if len(raw) != nbytes:
            raise CheckpointError(f"{where} is truncated ({len(raw):,} of {nbytes:,} bytes)")
        flat = np.frombuffer(raw, dtype=dtype, count=count) if count else np.empty(0, dtype)
        return flat.reshape(shape, order="F" if fortran else "C")


def _read_index(archive: _Archive) -> list[tuple[str, str, str | None]]:
    """``(key, kind, entry)`` for each key of the index, checked against the schema."""
    path = archive.path
    if f"{FORMAT_KEY}.npy" not in archive.zip.namelist():
        raise CheckpointError(f"{path} is not a needle checkpoint: it has no {FORMAT_KEY!r} entry")
    text = archive.read(FORMAT_KEY, None)
    if text.dtype.kind != "U" or text.shape != ():
        raise CheckpointError(f"{path}: the {FORMAT_KEY!r} entry is {text.dtype}, not text")
    try:
        header = json.loads(str(text[()]))
    except (ValueError, RecursionError) as exc:
        raise CheckpointError(f"{path}: unreadable {FORMAT_KEY!r} entry ({exc})") from exc
    if not isinstance(header, dict) or header.get("format") != FORMAT_NAME:
        shown = repr(header.get("format")) if isinstance(header, dict) else type(header).__name__
        raise CheckpointError(f"{path} is not a needle checkpoint (format {shown})")
    if header.get("version") != FORMAT_VERSION:
        raise CheckpointError(
            f"{path} is needle checkpoint version {header.get('version')!r}, this needle reads "
            f"version {FORMAT_VERSION}"
        )
    keys = header.get("keys")
    if not isinstance(keys, dict):
        raise CheckpointError(
            f"{path}: the index's 'keys' is a {type(keys).__name__}, not an object"
        )
    out: list[tuple[str, str, str | None]] = []
    named_by: dict[str, str] = {}
    for key, spec in keys.items():
        if not isinstance(spec, dict):
            raise CheckpointError(
                f"{path}: key {key!r}: expected {{'kind': ..., 'entry': ...}}, found "
                f"{type(spec).__name__}"
            )
        kind, entry = spec.get("kind"), spec.get("entry")
        if kind in _EMPTY_KINDS:
            out.append((key, kind, None))
            continue
        if kind not in _DATA_KINDS:
            raise CheckpointError(f"{path}: key {key!r} has unknown kind {kind!r}")
        if not isinstance(entry, str) or not entry or entry == FORMAT_KEY:
            raise CheckpointError(f"{path}: key {key!r} names no entry (found {entry!r})")
        if entry in named_by:
            raise CheckpointError(
                f"{path}: keys {named_by[entry]!r} and {key!r} both name entry {entry!r} "
                "(a checkpoint stores each value once)"
            )
        named_by[entry] = key
        out.append((key, kind, entry))
    return out


def load(path: str | os.PathLike, device: BackendDevice | str | None = None) -> dict[str, Any]:
    """Read a checkpoint written by :func:`save`.

    Tensors come back as Tensors (``requires_grad=False``) on ``device``, the
    default device when None; NDArrays likewise; numpy arrays and scalars as
    themselves. Nested dicts are rebuilt. Nothing in the file is executed, and
    nothing larger than the file is allocated.

    Raises:
        FileNotFoundError: there is no such file (other OS errors pass through too).
        CheckpointError: the file is not a needle checkpoint, or is damaged or
            malformed (not a zip of ``.npy`` entries, no format marker, another
            version, a bad index, a missing, corrupt or oversized entry, data of
            the wrong kind); the message names the file and the entry or key.
    """
    path = os.fspath(path)
    dev = None
    out: dict[str, Any] = {}
    containers: set[int] = set()
    with _Archive(path) as archive:
        for key, kind, entry in _read_index(archive):
            if entry is None:
                value: Any = None if kind == "none" else {}
            else:
                array = archive.read(entry, key)
                if kind in ("tensor", "ndarray"):
                    dev = dev or _device(device)
                value = _decode(kind, array, f"{path}: key {key!r}", dev)
            _insert(out, key, value, containers, path)
    return out


_SCALAR_KINDS = {"bool": ("b", bool), "int": ("iu", int), "float": ("f", float), "str": ("U", str)}


def _decode(kind: str, array: np.ndarray, where: str, dev: BackendDevice | None) -> Any:
    if kind in ("tensor", "ndarray"):
        if array.dtype.kind not in "fiub":
            raise CheckpointError(f"{where} is a {kind} but its entry holds {array.dtype} data")
        nd = NDArray.from_numpy(array, dev)  # in its stored dtype
        return Tensor(nd, requires_grad=False) if kind == "tensor" else nd
    if kind == "numpy":
        return array.copy()  # writable, and not a view of the file's bytes
    kinds, convert = _SCALAR_KINDS[kind]
    if array.dtype.kind not in kinds or array.shape != ():
        raise CheckpointError(
            f"{where} is a {kind} but its entry holds {array.dtype} data of shape {array.shape}"
        )
    return convert(array[()])


def _device(device: BackendDevice | str | None) -> BackendDevice:
    if device is None:
        return default_device()
    return _lookup_device(device) if isinstance(device, str) else device


def _insert(out: dict[str, Any], key: str, value: Any, containers: set[int], path: str) -> None:
    """Put ``value`` at ``key``'s place in the nested dict ``out``.

    ``containers`` holds the ids of the dicts made here for the key's parts, so that a
    value can never be mistaken for one (keys ``a`` and ``a/b`` cannot both hold values).
    """
    parts = key.split(_SEP)
    node = out
    for depth, part in enumerate(parts[:-1], 1):
        child = node.get(part)
        if child is None and part not in node:
            child = node[part] = {}
            containers.add(id(child))
        elif not (isinstance(child, dict) and id(child) in containers):
            raise CheckpointError(
                f"{path}: key {key!r} lies under {_SEP.join(parts[:depth])!r}, which holds a value"
            )
        node = child
    if parts[-1] in node:
        raise CheckpointError(
            f"{path}: key {key!r} is given twice, or holds both a value and keys under it"
        )
    node[parts[-1]] = value


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

    Arrays come back as the numpy arrays in the file (their stored dtype, read-only,
    nothing moved to a device); ``kind`` is the saved value's kind (``"tensor"``,
    ``"ndarray"``, ``"numpy"``, ``"int"``, ``"float"``, ``"bool"``, ``"str"``, ``"none"``,
    ``"dict"``), and the array is None for ``"none"`` and ``"dict"``. Keys are the flattened
    ``a/b`` paths. The file is read with :func:`load`'s checks.

    Raises:
        CheckpointError: the file is not a needle checkpoint, or is damaged or malformed.
    """
    path = os.fspath(path)
    with _Archive(path) as archive:
        index = _read_index(archive)
        entries = {
            key: (kind, archive.read(entry, key) if entry is not None else None)
            for key, kind, entry in index
        }
    return {"format": FORMAT_NAME, "version": FORMAT_VERSION}, entries
