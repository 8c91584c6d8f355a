"""Reading dataset files with errors that name the file and what was wrong."""

from __future__ import annotations

import gzip
import os
import zlib
from pathlib import Path

from ..data_basic import DatasetFormatError

__all__ = ["read_bytes"]

_GZIP_MAGIC = b"\x1f\x8b"


def read_bytes(path: str | os.PathLike, what: str) -> bytes:
    """The contents of ``path``, gunzipped when it is gzip data.

    Args:
        path: the file.
        what: a few words saying what the file should hold, for error messages.

    Raises:
        FileNotFoundError: ``path`` does not exist (the message names it and ``what``).
        DatasetFormatError: the gzip stream is truncated or corrupt.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{what} file not found: {path}")
    raw = path.read_bytes()
    if not raw.startswith(_GZIP_MAGIC):
        return raw
    try:
        return gzip.decompress(raw)
    except EOFError as exc:
        raise DatasetFormatError(f"{path}: truncated gzip data ({what})") from exc
    except (OSError, zlib.error) as exc:
        raise DatasetFormatError(f"{path}: corrupt gzip data ({what}): {exc}") from exc
